// Word count, in Go: the same processor as the Rust example
// (examples/wordcount), output for output.
//
// Splits each record's value into words (lower-cased, split at anything that
// is not a letter, a number or an apostrophe, apostrophes trimmed from both
// ends), keeps one counter per word in host state under "w/" + word (8 bytes
// big-endian, as the Rust SDK's put_u64), and emits one `word -> count`
// record per word occurrence, the count being the running total after it,
// with a `source-partition` header. Its snapshot is the number of records it
// has processed, 8 bytes big-endian.
//
// Config ([processor.config]): `min-length` (default 1) drops shorter words.
//
// Where it differs from Rust: unicode.IsLetter and unicode.IsNumber are
// close to Rust's Alphabetic and Numeric properties but not the same (Rust
// counts some combining marks as alphabetic), and strings.ToLower maps one
// code point to one (Rust maps İ to two and a final capital sigma to ς).
package main

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"wasmstream.dev/guest/wasmstream"
)

type wordCount struct {
	processed uint64
	minLength int
}

func words(s string) []string {
	fields := strings.FieldsFunc(s, func(c rune) bool {
		return !(c == '\'' || unicode.IsLetter(c) || unicode.IsNumber(c))
	})
	out := fields[:0]
	for _, f := range fields {
		if w := strings.ToLower(strings.Trim(f, "'")); w != "" {
			out = append(out, w)
		}
	}
	return out
}

func (p *wordCount) Init(config map[string]string) error {
	if v, ok := config["min-length"]; ok {
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return fmt.Errorf("processor config `min-length` = %q: not a non-negative integer", v)
		}
		p.minLength = int(n)
	}
	return nil
}

func (p *wordCount) Process(r *wasmstream.Record) ([]wasmstream.Output, error) {
	if !utf8.Valid(r.Value) {
		return nil, fmt.Errorf("value of %s/%d@%d is not UTF-8", r.Topic, r.Partition, r.Offset)
	}
	partition := []byte(strconv.Itoa(int(r.Partition)))
	var outs []wasmstream.Output
	for _, w := range words(string(r.Value)) {
		if utf8.RuneCountInString(w) < p.minLength {
			continue
		}
		key := []byte("w/" + w)
		count := wasmstream.GetU64(key) + 1
		wasmstream.PutU64(key, count)
		outs = append(outs, wasmstream.Output{
			Key:     []byte(w),
			Value:   []byte(strconv.FormatUint(count, 10)),
			Headers: []wasmstream.Header{{Key: "source-partition", Value: partition}},
		})
	}
	p.processed++
	return outs, nil
}

func (p *wordCount) Snapshot() []byte { return wasmstream.SnapshotU64(p.processed) }

func (p *wordCount) Restore(s []byte, _ wasmstream.SnapshotOrigin) (err error) {
	p.processed, err = wasmstream.RestoreU64(s)
	return err
}

func init() { wasmstream.Register(&wordCount{minLength: 1}) }

func main() {}
