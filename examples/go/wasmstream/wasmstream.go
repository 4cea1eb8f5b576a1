//go:build wasip1

// Package wasmstream is the Go side of a wasmstream processor: implement
// Processor, call Register from an init function, and build with standard
// Go for GOOS=wasip1 (see examples/go/README.md); the result becomes a
// component of wit/processor.wit's `processor` world (one Process call per
// record).
//
// A nil []byte is absent (a record without a key or value, a header without
// a value); an empty non-nil one is present and empty.
package wasmstream

import (
	"encoding/binary"
	"fmt"
)

// Header is a Kafka record header. Value nil: a header without a value.
type Header struct {
	Key   string
	Value []byte
}

// Record is one input record, as consumed from Kafka.
type Record struct {
	Topic     string
	Partition int32
	Offset    int64
	// Milliseconds since the Unix epoch; nil if the record has none.
	Timestamp *int64
	Key       []byte
	Value     []byte
	Headers   []Header
}

// Output is one record for the host to produce.
type Output struct {
	// One of the configured output topics; "" is the first one.
	Topic   string
	Key     []byte
	Value   []byte
	Headers []Header
	// nil: the input record's timestamp.
	Timestamp *int64
}

// SnapshotOrigin says which module took the snapshot handed to Restore.
type SnapshotOrigin struct {
	// SHA-256 of the component whose Snapshot returned the bytes, lowercase hex.
	ModuleDigest string
	// Whether that component is the one restoring them (a restart, a
	// rollback). False after a hot swap or when the configured module changed
	// since the checkpoint: the bytes may be in the format of an older
	// version, for this one to migrate.
	SameModule bool
}

// Processor is a stream processor. An error returned from Init, Process or
// Restore is reported by the host with the record it concerns; a panic traps
// the instance.
type Processor interface {
	// Init is called once on a fresh instance with [processor.config].
	Init(config map[string]string) error
	// Process is called once per input record, in offset order per partition.
	Process(r *Record) ([]Output, error)
	// Snapshot returns the in-memory state to keep at a checkpoint.
	Snapshot() []byte
	// Restore is called after Init with the last checkpoint's snapshot and
	// which module took it. A hot swap calls it on the new module with the
	// old one's snapshot (origin.SameModule false): this is where a new
	// version migrates an old format. An error keeps the old module running.
	Restore(snapshot []byte, origin SnapshotOrigin) error
}

var processor Processor

// Register sets the processor the component runs; call it from an init function.
func Register(p Processor) { processor = p }

func registered() Processor {
	if processor == nil {
		panic("wasmstream: no processor registered (call wasmstream.Register in an init function)")
	}
	return processor
}

// Get reads the task's state; ok is false if the key is absent. State is
// host-managed, one store per input partition, durable with the input
// offsets at each checkpoint.
func Get(key []byte) (value []byte, ok bool) { return get(key) }

// Put writes a state entry.
func Put(key, value []byte) { put(key, value) }

// Delete removes a state entry.
func Delete(key []byte) { del(key) }

// ScanPrefix returns the entries whose key starts with prefix, in key order
// (limit 0: all).
func ScanPrefix(prefix []byte, limit uint32) [][2][]byte { return scanPrefix(prefix, limit) }

// GetU64 reads a counter stored by PutU64 (0 if absent or not 8 bytes).
func GetU64(key []byte) uint64 {
	v, ok := Get(key)
	if !ok || len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

// PutU64 stores a counter as 8 bytes big-endian, the Rust SDK's encoding.
func PutU64(key []byte, n uint64) { Put(key, SnapshotU64(n)) }

// SnapshotU64 is a snapshot of one counter: 8 bytes big-endian.
func SnapshotU64(n uint64) []byte { return binary.BigEndian.AppendUint64(nil, n) }

// RestoreU64 is the counter of a SnapshotU64; an error for another size.
// Restore passes it the bytes alone: a processor whose snapshot format
// changed checks origin.SameModule (and origin.ModuleDigest) first and
// converts an older format.
func RestoreU64(snapshot []byte) (uint64, error) {
	if len(snapshot) != 8 {
		return 0, fmt.Errorf("snapshot has %d bytes, expected 8", len(snapshot))
	}
	return binary.BigEndian.Uint64(snapshot), nil
}

// Level is a log level.
type Level uint32

const (
	Trace Level = iota
	Debug
	Info
	Warn
	Error
)

// Log writes a line to the host's log, tagged with the task.
func Log(level Level, msg string) { logLine(level, msg) }
