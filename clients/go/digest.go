package jetinfer

import (
	"encoding/binary"
	"encoding/hex"

	"lukechampine.com/blake3"
)

// InputsDigest is the content digest of a job's inputs (section 8): lowercase hex
// BLAKE3-256 over, all integers little-endian, u64 input count, then per input its dtype
// string, u64 dimension count, i64 dimensions, u64 data length and the data. It is the
// result cache's key and the digest of inputs sent by reference (section 10).
func InputsDigest(inputs []Tensor) string {
	h := blake3.New(32, nil)
	var n [8]byte
	u64 := func(v uint64) {
		binary.LittleEndian.PutUint64(n[:], v)
		h.Write(n[:])
	}
	u64(uint64(len(inputs)))
	for _, t := range inputs {
		h.Write([]byte(t.DType))
		u64(uint64(len(t.Shape)))
		for _, d := range t.Shape {
			u64(uint64(d))
		}
		u64(uint64(len(t.Data)))
		h.Write(t.Data)
	}
	return hex.EncodeToString(h.Sum(nil))
}
