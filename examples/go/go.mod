module wasmstream.dev/guest

go 1.26
