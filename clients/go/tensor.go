package jetinfer

import (
	"encoding/binary"
	"fmt"
	"math"
)

// DType is a tensor's element type on the wire (section 4).
type DType string

// The element types.
const (
	F32  DType = "f32"
	F16  DType = "f16"
	BF16 DType = "bf16"
	F64  DType = "f64"
	I64  DType = "i64"
	I32  DType = "i32"
	I16  DType = "i16"
	I8   DType = "i8"
	U8   DType = "u8"
	Bool DType = "bool"
)

// Size is the bytes per element, 0 for an unknown dtype.
func (d DType) Size() int {
	switch d {
	case F64, I64:
		return 8
	case F32, I32:
		return 4
	case F16, BF16, I16:
		return 2
	case I8, U8, Bool:
		return 1
	}
	return 0
}

// Limits of one job (section 5, the defaults).
const (
	// MaxPayloadBytes bounds a job message and the inputs sent by reference.
	MaxPayloadBytes = 8 << 20
	// MaxElements bounds the elements of one input tensor.
	MaxElements = 1 << 26
	// MaxInputs bounds the input tensors of one job.
	MaxInputs = 16
	// MaxDims bounds the dimensions of one tensor.
	MaxDims = 8
)

// Tensor is one sample (no batch dimension): Data holds the elements little-endian,
// row-major, len(Data) = product(Shape) × DType.Size(). An empty Shape is a scalar.
type Tensor struct {
	DType DType
	Shape []int64
	Data  []byte
}

// F32Tensor makes an f32 tensor of values (row-major) with this shape.
func F32Tensor(shape []int64, values []float32) Tensor {
	data := make([]byte, 4*len(values))
	for i, v := range values {
		binary.LittleEndian.PutUint32(data[4*i:], math.Float32bits(v))
	}
	return Tensor{DType: F32, Shape: shape, Data: data}
}

// F64Tensor makes an f64 tensor.
func F64Tensor(shape []int64, values []float64) Tensor {
	data := make([]byte, 8*len(values))
	for i, v := range values {
		binary.LittleEndian.PutUint64(data[8*i:], math.Float64bits(v))
	}
	return Tensor{DType: F64, Shape: shape, Data: data}
}

// I64Tensor makes an i64 tensor (e.g. token ids).
func I64Tensor(shape []int64, values []int64) Tensor {
	data := make([]byte, 8*len(values))
	for i, v := range values {
		binary.LittleEndian.PutUint64(data[8*i:], uint64(v))
	}
	return Tensor{DType: I64, Shape: shape, Data: data}
}

// I32Tensor makes an i32 tensor.
func I32Tensor(shape []int64, values []int32) Tensor {
	data := make([]byte, 4*len(values))
	for i, v := range values {
		binary.LittleEndian.PutUint32(data[4*i:], uint32(v))
	}
	return Tensor{DType: I32, Shape: shape, Data: data}
}

// U8Tensor makes a u8 tensor (e.g. an image); it keeps values, it does not copy them.
func U8Tensor(shape []int64, values []byte) Tensor {
	return Tensor{DType: U8, Shape: shape, Data: values}
}

// Elements is product(Shape) (1 for a scalar); -1 when a dimension is negative or the
// product overflows.
func (t Tensor) Elements() int64 {
	n := int64(1)
	for _, d := range t.Shape {
		if d < 0 || (d > 0 && n > math.MaxInt64/d) {
			return -1
		}
		n *= d
	}
	return n
}

// Validate checks the tensor's structure as a worker does: known dtype, at most
// MaxDims dimensions, none negative, at most MaxElements elements, and a data length
// that matches shape and dtype (invalid_input).
func (t Tensor) Validate() error {
	size := t.DType.Size()
	if size == 0 {
		return invalidInput("unknown dtype %q", string(t.DType))
	}
	if len(t.Shape) > MaxDims {
		return invalidInput("%d dimensions, at most %d", len(t.Shape), MaxDims)
	}
	n := t.Elements()
	if n < 0 {
		return invalidInput("shape %v has a negative dimension or is too large", t.Shape)
	}
	if n > MaxElements {
		return invalidInput("%d elements, at most %d", n, MaxElements)
	}
	if int64(len(t.Data)) != n*int64(size) {
		return invalidInput("data is %d bytes, shape %v of %s needs %d",
			len(t.Data), t.Shape, t.DType, n*int64(size))
	}
	return nil
}

// Float32s returns the elements of an f32 tensor.
func (t Tensor) Float32s() ([]float32, error) {
	if t.DType != F32 {
		return nil, fmt.Errorf("jetinfer: tensor is %s, not f32", t.DType)
	}
	if len(t.Data)%4 != 0 {
		return nil, fmt.Errorf("jetinfer: f32 data of %d bytes", len(t.Data))
	}
	out := make([]float32, len(t.Data)/4)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(t.Data[4*i:]))
	}
	return out, nil
}

// Float64s returns the elements of a tensor of any dtype as float64: what an f16
// deployment's f16 outputs, or integer outputs, are compared with.
func (t Tensor) Float64s() ([]float64, error) {
	size := t.DType.Size()
	if size == 0 {
		return nil, fmt.Errorf("jetinfer: unknown dtype %q", string(t.DType))
	}
	if len(t.Data)%size != 0 {
		return nil, fmt.Errorf("jetinfer: %s data of %d bytes", t.DType, len(t.Data))
	}
	le := binary.LittleEndian
	out := make([]float64, len(t.Data)/size)
	for i := range out {
		b := t.Data[size*i:]
		switch t.DType {
		case F32:
			out[i] = float64(math.Float32frombits(le.Uint32(b)))
		case F64:
			out[i] = math.Float64frombits(le.Uint64(b))
		case F16:
			out[i] = float64(halfToFloat32(le.Uint16(b)))
		case BF16:
			// bf16 is the upper half of a float32.
			out[i] = float64(math.Float32frombits(uint32(le.Uint16(b)) << 16))
		case I64:
			out[i] = float64(int64(le.Uint64(b)))
		case I32:
			out[i] = float64(int32(le.Uint32(b)))
		case I16:
			out[i] = float64(int16(le.Uint16(b)))
		case I8:
			out[i] = float64(int8(b[0]))
		case U8, Bool:
			out[i] = float64(b[0])
		}
	}
	return out, nil
}

// halfToFloat32 widens an IEEE 754 binary16 value.
func halfToFloat32(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	frac := uint32(h) & 0x3ff
	switch {
	case exp == 0x1f: // inf or NaN
		return math.Float32frombits(sign | 0x7f800000 | frac<<13)
	case exp != 0: // normal
		return math.Float32frombits(sign | (exp+112)<<23 | frac<<13)
	case frac == 0: // ±0
		return math.Float32frombits(sign)
	}
	// Subnormal half: frac × 2^-24, exact in float32.
	v := float32(frac) * float32(1.0/(1<<24))
	if sign != 0 {
		v = -v
	}
	return v
}
