module wasmstream.dev/conformance

go 1.26

require wasmstream.dev/guest v0.0.0

replace wasmstream.dev/guest => ../../../examples/go
