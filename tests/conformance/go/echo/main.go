// The conformance suite's echo processor (tests/conformance/README.md), in Go.
package main

import (
	"bytes"
	"fmt"

	"wasmstream.dev/guest/wasmstream"
)

type echo struct{ echoed uint64 }

func (e *echo) Init(map[string]string) error { return nil }

func (e *echo) Process(r *wasmstream.Record) ([]wasmstream.Output, error) {
	if r.Value != nil && bytes.Equal(r.Value, []byte("fail")) {
		return nil, fmt.Errorf("asked to fail at offset %d", r.Offset)
	}
	e.echoed++
	return []wasmstream.Output{{Key: r.Key, Value: r.Value, Headers: r.Headers}}, nil
}

func (e *echo) Snapshot() []byte { return wasmstream.SnapshotU64(e.echoed) }

func (e *echo) Restore(s []byte, _ wasmstream.SnapshotOrigin) (err error) {
	e.echoed, err = wasmstream.RestoreU64(s)
	return err
}

func init() { wasmstream.Register(&echo{}) }

func main() {}
