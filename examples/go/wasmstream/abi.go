//go:build wasip1

// The canonical ABI of wit/processor.wit's `processor` world, written by
// hand: standard Go accepts only scalars and plain pointers in
// //go:wasmimport and //go:wasmexport signatures, and wit-bindgen-go's
// generated bindings (go.bytecodealliance.org v0.7.0) pass pointers to
// generic structs and arrays of strings, which Go 1.26 rejects
// ("go:wasmexport: unsupported parameter type *[2]string", "unsupported
// result type *cm.Result[...]"). Layouts follow the canonical ABI for wasm32
// (little-endian, 4-byte pointers).

package wasmstream

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"unsafe"
)

// The collector runs only where this module may call the host. A collection
// reads clocks (WASI imports), and the canonical ABI forbids calling an
// import from cabi_realloc, which the host calls to lower arguments into this
// module and results of imports: a collection there traps the instance
// ("cannot leave component instance"; the conformance suite's 1 MiB value
// found it). So automatic collection is off, and each export starts with a
// collection once 64 MiB were allocated since the last one.
func init() { debug.SetGCPercent(-1) }

const collectEvery = 64 << 20

var allocated = []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
var allocatedAtCollection uint64

func collectIfDue() {
	metrics.Read(allocated)
	if a := allocated[0].Value.Uint64(); a-allocatedAtCollection >= collectEvery {
		runtime.GC()
		allocatedAtCollection = a
	}
}

//go:wasmimport wasmstream:processor/state@0.2.0 get
func stateGet(key unsafe.Pointer, keyLen uint32, ret unsafe.Pointer)

//go:wasmimport wasmstream:processor/state@0.2.0 put
func statePut(key unsafe.Pointer, keyLen uint32, value unsafe.Pointer, valueLen uint32)

//go:wasmimport wasmstream:processor/state@0.2.0 delete
func stateDelete(key unsafe.Pointer, keyLen uint32)

//go:wasmimport wasmstream:processor/state@0.2.0 scan-prefix
func stateScanPrefix(prefix unsafe.Pointer, prefixLen uint32, limit uint32, ret unsafe.Pointer)

//go:wasmimport wasmstream:processor/log@0.2.0 log
func hostLog(level uint32, msg unsafe.Pointer, msgLen uint32)

// Memory the host allocated through cabi_realloc (arguments it lowers into
// this module, lists an import returns) stays reachable here until it has
// been copied into Go values: Go's collector does not know the host holds it.
var pinned [][]byte

// What the last export returned, kept until the host has read it.
var returned []any

//go:wasmexport cabi_realloc
func cabiRealloc(old, oldSize, align, newSize uint32) uint32 {
	if newSize == 0 {
		return align
	}
	b := make([]byte, newSize+align)
	at := uint32(uintptr(unsafe.Pointer(&b[0])))
	at = (at + align - 1) &^ (align - 1)
	if old != 0 && oldSize > 0 {
		copy(mem(at, newSize), mem(old, min(oldSize, newSize)))
	}
	pinned = append(pinned, b)
	return at
}

// The WASI adapter's own memory (its state, allocated on its first WASI call,
// which the Go runtime makes while it initialises): from a static arena,
// since the Go allocator cannot run before the runtime is up. wit-component
// hands the adapter this function instead of cabi_realloc.
var adapterArena [256 << 10]byte
var adapterUsed uint32

//go:wasmexport cabi_realloc_adapter
func cabiReallocAdapter(old, oldSize, align, newSize uint32) uint32 {
	if old != 0 {
		panic("wasmstream: the WASI adapter asked to grow its memory")
	}
	base := uint32(uintptr(unsafe.Pointer(&adapterArena[0])))
	at := (base + adapterUsed + align - 1) &^ (align - 1)
	if at+newSize > base+uint32(len(adapterArena)) {
		panic("wasmstream: the WASI adapter's arena is full")
	}
	adapterUsed = at + newSize - base
	return at
}

// Addresses the host hands over are linear-memory offsets, not Go pointers:
// turning them into unsafe.Pointer is what `go vet` flags as "possible misuse"
// (the memory is the module's own and never moves).
func mem(addr, n uint32) []byte {
	if n == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(uintptr(addr))), n)
}

func u32(addr uint32) uint32 { return *(*uint32)(unsafe.Pointer(uintptr(addr))) }

func u8(addr uint32) uint8 { return *(*uint8)(unsafe.Pointer(uintptr(addr))) }

func i64(addr uint32) int64 { return *(*int64)(unsafe.Pointer(uintptr(addr))) }

// A copy of the host's bytes: present is false for an absent option.
func liftBytes(present bool, ptr, n uint32) []byte {
	if !present {
		return nil
	}
	b := make([]byte, n)
	copy(b, mem(ptr, n))
	return b
}

func liftString(ptr, n uint32) string { return string(mem(ptr, n)) }

// header: key string @0, value option<list<u8>> @8 (disc), @12, @16; 20 bytes.
func liftHeaders(ptr, n uint32) []Header {
	hs := make([]Header, n)
	for i := range hs {
		at := ptr + uint32(i)*20
		hs[i] = Header{Key: liftString(u32(at), u32(at+4)), Value: liftBytes(u8(at+8) != 0, u32(at+12), u32(at+16))}
	}
	return hs
}

// Go memory the host reads after the call: its address, kept alive.
func lower(b []byte) (uint32, uint32) {
	if len(b) == 0 {
		return 1, 0
	}
	returned = append(returned, b)
	return uint32(uintptr(unsafe.Pointer(&b[0]))), uint32(len(b))
}

func area(size int) ([]byte, uint32) {
	b := make([]byte, size+8)
	returned = append(returned, b)
	at := (uint32(uintptr(unsafe.Pointer(&b[0]))) + 7) &^ 7
	return mem(at, uint32(size)), at
}

func put32(b []byte, v uint32) { *(*uint32)(unsafe.Pointer(&b[0])) = v }

func put64(b []byte, v int64) { *(*int64)(unsafe.Pointer(&b[0])) = v }

// Lowers b and writes its (ptr, len) at dst[0:8].
func putList(dst []byte, b []byte) {
	p, n := lower(b)
	put32(dst, p)
	put32(dst[4:], n)
}

// result<_, error>: disc @0, string @4, @8; 12 bytes.
func lowerResult(err error) uint32 {
	a, at := area(12)
	if err != nil {
		a[0] = 1
		putList(a[4:], []byte(err.Error()))
	}
	return at
}

// Called first by each export: the previous call's results were read, and
// this is a place where the collector may run (arguments are pinned).
func enter() {
	returned = returned[:0]
	collectIfDue()
}

//go:wasmexport init
func exportInit(ptr, n uint32) uint32 {
	enter()
	config := make(map[string]string, n)
	for i := uint32(0); i < n; i++ {
		at := ptr + i*16
		config[liftString(u32(at), u32(at+4))] = liftString(u32(at+8), u32(at+12))
	}
	pinned = nil
	return lowerResult(registered().Init(config))
}

//go:wasmexport process
func exportProcess(topicPtr, topicLen uint32, partition int32, offset int64, tsSome uint32, ts int64,
	keySome, keyPtr, keyLen, valueSome, valuePtr, valueLen, headersPtr, headersLen uint32) uint32 {
	enter()
	r := &Record{
		Topic:     liftString(topicPtr, topicLen),
		Partition: partition,
		Offset:    offset,
		Key:       liftBytes(keySome != 0, keyPtr, keyLen),
		Value:     liftBytes(valueSome != 0, valuePtr, valueLen),
		Headers:   liftHeaders(headersPtr, headersLen),
	}
	if tsSome != 0 {
		r.Timestamp = &ts
	}
	pinned = nil
	outs, err := registered().Process(r)
	// result<list<output-record>, error>: disc @0, (ptr, len) @4, @8; its
	// error case is laid out as result<_, error>'s.
	if err != nil {
		return lowerResult(err)
	}
	a, at := area(12)
	// output-record, 64 bytes, align 8: topic option<string> @0 (disc), @4, @8;
	// key @12, @16, @20; value @24, @28, @32; headers @36, @40;
	// timestamp option<s64> @48 (disc), @56.
	list, listAt := area(64 * len(outs))
	for i, o := range outs {
		rec := list[i*64 : (i+1)*64]
		if o.Topic != "" {
			rec[0] = 1
			putList(rec[4:], []byte(o.Topic))
		}
		for _, f := range []struct {
			at int
			b  []byte
		}{{12, o.Key}, {24, o.Value}} {
			if f.b != nil {
				rec[f.at] = 1
				putList(rec[f.at+4:], f.b)
			}
		}
		hs, hsAt := area(20 * len(o.Headers))
		for j, h := range o.Headers {
			e := hs[j*20 : (j+1)*20]
			putList(e, []byte(h.Key))
			if h.Value != nil {
				e[8] = 1
				putList(e[12:], h.Value)
			}
		}
		put32(rec[36:], hsAt)
		put32(rec[40:], uint32(len(o.Headers)))
		if o.Timestamp != nil {
			rec[48] = 1
			put64(rec[56:], *o.Timestamp)
		}
	}
	put32(a[4:], listAt)
	put32(a[8:], uint32(len(outs)))
	return at
}

//go:wasmexport snapshot
func exportSnapshot() uint32 {
	enter()
	a, at := area(8)
	putList(a, registered().Snapshot())
	return at
}

// restore's parameters, flattened: snapshot list<u8> (ptr, len), then origin
// snapshot-origin's fields: module-digest string (ptr, len), same-module bool
// (an i32, 0 false).
//
//go:wasmexport restore
func exportRestore(ptr, n, digestPtr, digestLen, sameModule uint32) uint32 {
	enter()
	snapshot := liftBytes(true, ptr, n)
	origin := SnapshotOrigin{ModuleDigest: liftString(digestPtr, digestLen), SameModule: sameModule != 0}
	pinned = nil
	return lowerResult(registered().Restore(snapshot, origin))
}

// A non-nil pointer for an empty list argument.
var empty byte

func ptrOf(b []byte) unsafe.Pointer {
	if len(b) == 0 {
		return unsafe.Pointer(&empty)
	}
	return unsafe.Pointer(&b[0])
}

func get(key []byte) ([]byte, bool) {
	var ret [3]uint32 // option<list<u8>>: disc @0, ptr @4, len @8
	stateGet(ptrOf(key), uint32(len(key)), unsafe.Pointer(&ret))
	v := liftBytes(ret[0]&0xff != 0, ret[1], ret[2])
	pinned = nil
	return v, ret[0]&0xff != 0
}

func put(key, value []byte) {
	statePut(ptrOf(key), uint32(len(key)), ptrOf(value), uint32(len(value)))
}

func del(key []byte) { stateDelete(ptrOf(key), uint32(len(key))) }

func scanPrefix(prefix []byte, limit uint32) [][2][]byte {
	var ret [2]uint32 // list<tuple<list<u8>, list<u8>>>: ptr, len; 16 bytes each
	stateScanPrefix(ptrOf(prefix), uint32(len(prefix)), limit, unsafe.Pointer(&ret))
	out := make([][2][]byte, ret[1])
	for i := range out {
		at := ret[0] + uint32(i)*16
		out[i] = [2][]byte{liftBytes(true, u32(at), u32(at+4)), liftBytes(true, u32(at+8), u32(at+12))}
	}
	pinned = nil
	return out
}

func logLine(level Level, msg string) {
	b := []byte(msg)
	hostLog(uint32(level), ptrOf(b), uint32(len(b)))
}
