package main

// Reading the golden .npy files (NumPy format 1.0-3.0, C order) as per-sample tensors.

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"

	jetinfer "github.com/jetinfer/jetinfer/clients/go"
)

// npyDTypes maps NumPy's descr to the wire dtype (little-endian or byte-sized only).
var npyDTypes = map[string]jetinfer.DType{
	"<f4": jetinfer.F32, "<f2": jetinfer.F16, "<f8": jetinfer.F64, "<i8": jetinfer.I64,
	"<i4": jetinfer.I32, "<i2": jetinfer.I16, "|i1": jetinfer.I8, "|u1": jetinfer.U8,
	"|b1": jetinfer.Bool,
}

var (
	descrRe = regexp.MustCompile(`'descr':\s*'([^']+)'`)
	orderRe = regexp.MustCompile(`'fortran_order':\s*(True|False)`)
	shapeRe = regexp.MustCompile(`'shape':\s*\(([^)]*)\)`)
)

// readNpy splits an array of shape (N, ...) into N tensors of shape (...).
func readNpy(path string) ([]jetinfer.Tensor, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	fail := func(why string, args ...interface{}) ([]jetinfer.Tensor, error) {
		return nil, fmt.Errorf("%s: %s", path, fmt.Sprintf(why, args...))
	}
	if len(raw) < 10 || !bytes.HasPrefix(raw, []byte("\x93NUMPY")) {
		return fail("not a .npy file")
	}
	var headerLen, start int
	switch raw[6] {
	case 1:
		headerLen, start = int(binary.LittleEndian.Uint16(raw[8:])), 10
	case 2, 3:
		headerLen, start = int(binary.LittleEndian.Uint32(raw[8:])), 12
	default:
		return fail("npy format version %d", raw[6])
	}
	if start+headerLen > len(raw) {
		return fail("truncated header")
	}
	header := string(raw[start : start+headerLen])
	data := raw[start+headerLen:]
	d, o, s := descrRe.FindStringSubmatch(header), orderRe.FindStringSubmatch(header), shapeRe.FindStringSubmatch(header)
	if d == nil || o == nil || s == nil {
		return fail("header %q", header)
	}
	dtype, ok := npyDTypes[d[1]]
	if !ok {
		return fail("dtype %s has no wire dtype", d[1])
	}
	if o[1] == "True" {
		return fail("Fortran order")
	}
	var shape []int64
	for _, f := range strings.Split(s[1], ",") {
		if f = strings.TrimSpace(f); f != "" {
			n, err := strconv.ParseInt(f, 10, 64)
			if err != nil {
				return fail("shape %q", s[1])
			}
			shape = append(shape, n)
		}
	}
	if len(shape) == 0 {
		return fail("a scalar has no samples")
	}
	per := int64(dtype.Size())
	for _, n := range shape[1:] {
		per *= n
	}
	if int64(len(data)) != per*shape[0] {
		return fail("%d data bytes, shape %v needs %d", len(data), shape, per*shape[0])
	}
	out := make([]jetinfer.Tensor, shape[0])
	for i := range out {
		out[i] = jetinfer.Tensor{DType: dtype, Shape: shape[1:], Data: data[int64(i)*per : int64(i+1)*per]}
	}
	return out, nil
}
