package jetinfer

import (
	"bytes"
	"sort"

	"github.com/vmihailenco/msgpack/v5"
)

// SchemaVersion is the `v` of every message this package writes and reads.
const SchemaVersion = 1

// InputsRef names inputs kept in Redis instead of inside the job (section 10).
type InputsRef struct {
	// Bytes is the length of the stored value.
	Bytes uint64
	// Digest is InputsDigest of the inputs.
	Digest string
	// Store is the input store holding them (0: the result store; left out of the
	// message when 0, example 9.6).
	Store uint16
}

// EncodeJob writes the Job map of section 3 exactly as the Rust encoder does: keys in the
// order v, id, model, version, inputs, inputs_ref, deadline_ms, cache, meta, unset
// optional keys left out, integers in their shortest form, meta sorted by key. With
// ref, inputs is [] and inputs_ref names the stored inputs.
func EncodeJob(j *Job, ref *InputsRef) ([]byte, error) {
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	fields := 4
	for _, set := range []bool{j.Version != "", ref != nil, !j.Deadline.IsZero(), j.NoCache, len(j.Meta) > 0} {
		if set {
			fields++
		}
	}
	w := writer{enc: enc}
	w.mapLen(fields)
	w.str("v")
	w.uint(SchemaVersion)
	w.str("id")
	w.str(j.ID)
	w.str("model")
	w.str(j.Model)
	if j.Version != "" {
		w.str("version")
		w.str(j.Version)
	}
	w.str("inputs")
	if ref != nil {
		w.arrayLen(0)
		w.str("inputs_ref")
		if ref.Store != 0 {
			w.mapLen(3)
		} else {
			w.mapLen(2)
		}
		w.str("bytes")
		w.uint(ref.Bytes)
		w.str("digest")
		w.str(ref.Digest)
		if ref.Store != 0 {
			w.str("store")
			w.uint(uint64(ref.Store))
		}
	} else {
		w.tensors(j.Inputs)
	}
	if !j.Deadline.IsZero() {
		ms := j.Deadline.UnixMilli()
		if ms < 0 {
			return nil, invalidInput("deadline %v is before 1970", j.Deadline)
		}
		w.str("deadline_ms")
		w.uint(uint64(ms))
	}
	if j.NoCache {
		w.str("cache")
		w.err(enc.EncodeBool(false))
	}
	if len(j.Meta) > 0 {
		keys := make([]string, 0, len(j.Meta))
		for k := range j.Meta {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		w.str("meta")
		w.mapLen(len(keys))
		for _, k := range keys {
			w.str(k)
			w.str(j.Meta[k])
		}
	}
	if w.failed != nil {
		return nil, w.failed
	}
	return buf.Bytes(), nil
}

// EncodeInputs writes the value stored for inputs sent by reference (example 9.5): the
// MessagePack array of the tensors, exactly what a job's inputs field holds.
func EncodeInputs(inputs []Tensor) []byte {
	var buf bytes.Buffer
	w := writer{enc: msgpack.NewEncoder(&buf)}
	w.tensors(inputs)
	if w.failed != nil {
		// A bytes.Buffer does not fail to write.
		panic("jetinfer: encoding into memory failed: " + w.failed.Error())
	}
	return buf.Bytes()
}

// writer keeps the first encoding error, so the field sequence reads straight.
type writer struct {
	enc    *msgpack.Encoder
	failed error
}

func (w *writer) err(e error) {
	if w.failed == nil {
		w.failed = e
	}
}
func (w *writer) mapLen(n int)   { w.err(w.enc.EncodeMapLen(n)) }
func (w *writer) arrayLen(n int) { w.err(w.enc.EncodeArrayLen(n)) }
func (w *writer) str(s string)   { w.err(w.enc.EncodeString(s)) }
func (w *writer) uint(n uint64)  { w.err(w.enc.EncodeUint(n)) }

func (w *writer) tensors(ts []Tensor) {
	w.arrayLen(len(ts))
	for _, t := range ts {
		w.mapLen(3)
		w.str("dtype")
		w.str(string(t.DType))
		w.str("shape")
		w.arrayLen(len(t.Shape))
		for _, d := range t.Shape {
			w.err(w.enc.EncodeInt(d))
		}
		w.str("data")
		if len(t.Data) == 0 {
			// Still bin: EncodeBytes would write nil for a nil slice.
			w.err(w.enc.EncodeBytesLen(0))
		} else {
			w.err(w.enc.EncodeBytes(t.Data))
		}
	}
}
