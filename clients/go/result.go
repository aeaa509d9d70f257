package jetinfer

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/vmihailenco/msgpack/v5"
)

// ErrorBody is a result's error: a stable code and a human-readable message.
type ErrorBody struct {
	Code    ErrorCode
	Message string
}

// Timings of a result, milliseconds.
type Timings struct {
	// QueuedMs: from publish (JetStream timestamp) until the job's batch started.
	QueuedMs float64
	// BatchSize: jobs in the batch that ran this one (0 when no model ran).
	BatchSize uint64
	// ComputeMs: the batch's forward pass, host-device copies included.
	ComputeMs float64
	// TotalMs: from publish until the result was written.
	TotalMs float64
}

// Result is a job's final result (section 6), as stored at jetinfer:result:<id>. Keys a
// writer left out take their zero value.
type Result struct {
	ID      string
	Status  Status
	Model   string
	Version string
	// Outputs (status ok): the model's outputs in order, one sample each; read every
	// dtype (an f16 deployment may return f16; Tensor.Float64s reads them all).
	Outputs []Tensor
	// Error is set when the status is not ok.
	Error  *ErrorBody
	Meta   map[string]string
	Worker string
	// Cached: the result cache answered, no model ran.
	Cached        bool
	Attempts      uint64
	Timings       Timings
	CompletedAtMs uint64
	// InputsDigest: the digest (wire format section 8) of the inputs this result answers,
	// "" when unknown. See Answers.
	InputsDigest string
	// TraceID: the job's W3C trace id, "" when untraced.
	TraceID string
}

// Answers is false when the result provably belongs to another job under the same id:
// another model, or other inputs (by digest; a result without a digest cannot tell).
func (r *Result) Answers(model, digest string) bool {
	return r.Model == model && (r.InputsDigest == "" || r.InputsDigest == digest)
}

// Err is nil for status ok, else a *ResultError with the status and the error code.
func (r *Result) Err() error {
	if r.Status == StatusOK {
		return nil
	}
	e := &ResultError{ID: r.ID, Status: r.Status}
	if r.Error != nil {
		e.Code, e.Message = r.Error.Code, r.Error.Message
	}
	return e
}

// DecodeResult reads a result's MessagePack map. Unknown keys are skipped; v must be 1,
// id and status must be there.
func DecodeResult(b []byte) (*Result, error) {
	r := &Result{Meta: map[string]string{}}
	d := msgpack.NewDecoder(bytes.NewReader(b))
	var v uint64
	var seen struct{ v, id, status bool }
	err := eachKey(d, func(key string) error {
		var err error
		switch key {
		case "v":
			v, err = d.DecodeUint64()
			seen.v = true
		case "id":
			r.ID, err = d.DecodeString()
			seen.id = true
		case "status":
			var s string
			s, err = d.DecodeString()
			r.Status, seen.status = Status(s), true
		case "model":
			r.Model, err = d.DecodeString()
		case "version":
			r.Version, err = d.DecodeString()
		case "outputs":
			r.Outputs, err = decodeTensors(d)
		case "error":
			r.Error, err = decodeErrorBody(d)
		case "meta":
			err = eachKey(d, func(k string) error {
				val, err := d.DecodeString()
				r.Meta[k] = val
				return err
			})
		case "worker":
			r.Worker, err = d.DecodeString()
		case "inputs_digest":
			r.InputsDigest, err = d.DecodeString()
		case "trace_id":
			r.TraceID, err = d.DecodeString()
		case "cached":
			r.Cached, err = d.DecodeBool()
		case "attempts":
			r.Attempts, err = d.DecodeUint64()
		case "timings":
			err = decodeTimings(d, &r.Timings)
		case "completed_at_ms":
			r.CompletedAtMs, err = d.DecodeUint64()
		default:
			err = d.Skip()
		}
		if err != nil {
			return fmt.Errorf("%q: %w", key, err)
		}
		return nil
	})
	switch {
	case err != nil:
	case !seen.v || v != SchemaVersion:
		err = fmt.Errorf("schema version v is missing or not %d", SchemaVersion)
	case !seen.id || !seen.status:
		err = errors.New("id or status is missing")
	}
	if err != nil {
		return nil, &DecodeError{What: "result", Err: err}
	}
	return r, nil
}

// DecodeInputs reads the value stored for inputs sent by reference (example 9.5).
func DecodeInputs(b []byte) ([]Tensor, error) {
	ts, err := decodeTensors(msgpack.NewDecoder(bytes.NewReader(b)))
	if err != nil {
		return nil, &DecodeError{What: "stored inputs", Err: err}
	}
	return ts, nil
}

// eachKey reads a map (nil reads as empty), calling f with the decoder at each value.
func eachKey(d *msgpack.Decoder, f func(key string) error) error {
	n, err := d.DecodeMapLen()
	if err != nil {
		return err
	}
	for i := 0; i < n; i++ {
		key, err := d.DecodeString()
		if err != nil {
			return fmt.Errorf("map key: %w", err)
		}
		if err := f(key); err != nil {
			return err
		}
	}
	return nil
}

func decodeTensors(d *msgpack.Decoder) ([]Tensor, error) {
	n, err := d.DecodeArrayLen()
	if err != nil || n <= 0 {
		return nil, err
	}
	out := make([]Tensor, n)
	for i := range out {
		err := eachKey(d, func(key string) error {
			var err error
			switch key {
			case "dtype":
				var s string
				s, err = d.DecodeString()
				out[i].DType = DType(s)
			case "shape":
				var dims int
				if dims, err = d.DecodeArrayLen(); err == nil && dims > 0 {
					out[i].Shape = make([]int64, dims)
					for k := range out[i].Shape {
						if out[i].Shape[k], err = d.DecodeInt64(); err != nil {
							break
						}
					}
				} else if err == nil {
					out[i].Shape = []int64{}
				}
			case "data":
				out[i].Data, err = d.DecodeBytes()
			default:
				err = d.Skip()
			}
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("tensor %d: %w", i, err)
		}
	}
	return out, nil
}

func decodeErrorBody(d *msgpack.Decoder) (*ErrorBody, error) {
	if c, err := d.PeekCode(); err == nil && c == 0xc0 {
		return nil, d.DecodeNil()
	}
	e := &ErrorBody{}
	err := eachKey(d, func(key string) error {
		var err error
		switch key {
		case "code":
			var s string
			s, err = d.DecodeString()
			e.Code = ErrorCode(s)
		case "message":
			e.Message, err = d.DecodeString()
		default:
			err = d.Skip()
		}
		return err
	})
	return e, err
}

func decodeTimings(d *msgpack.Decoder, t *Timings) error {
	return eachKey(d, func(key string) error {
		var err error
		switch key {
		case "queued_ms":
			t.QueuedMs, err = d.DecodeFloat64()
		case "batch_size":
			t.BatchSize, err = d.DecodeUint64()
		case "compute_ms":
			t.ComputeMs, err = d.DecodeFloat64()
		case "total_ms":
			t.TotalMs, err = d.DecodeFloat64()
		default:
			err = d.Skip()
		}
		return err
	})
}
