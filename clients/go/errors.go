package jetinfer

import (
	"errors"
	"fmt"
	"strings"
)

// Status is how a job ended.
type Status string

// The statuses of a result.
const (
	StatusOK      Status = "ok"
	StatusError   Status = "error"
	StatusExpired Status = "expired"
)

// ErrorCode is a result's stable error code (docs/wire-format.md section 6); its strings
// never change meaning, so branch on the code, not on the message.
type ErrorCode string

// The error codes a result may carry.
const (
	CodeBadPayload        ErrorCode = "bad_payload"
	CodeInvalidInput      ErrorCode = "invalid_input"
	CodeUnknownModel      ErrorCode = "unknown_model"
	CodeExpired           ErrorCode = "expired"
	CodeOverloaded        ErrorCode = "overloaded"
	CodeResourceExhausted ErrorCode = "resource_exhausted"
	CodePoison            ErrorCode = "poison"
	CodeInternal          ErrorCode = "internal"
)

// RetryWithNewID tells whether publishing the job again under a new id may succeed:
// overloaded and internal, and expired with a later deadline (section 6's table).
func (c ErrorCode) RetryWithNewID() bool {
	switch c {
	case CodeOverloaded, CodeInternal, CodeExpired:
		return true
	}
	return false
}

// InvalidJobError: the job was refused before publishing because the server would
// refuse it too, with the code it would answer (bad_payload or invalid_input).
type InvalidJobError struct {
	Code    ErrorCode
	Message string
}

func (e *InvalidJobError) Error() string {
	return fmt.Sprintf("the job is invalid (%s): %s", e.Code, e.Message)
}

func invalidInput(format string, args ...interface{}) error {
	return &InvalidJobError{Code: CodeInvalidInput, Message: fmt.Sprintf(format, args...)}
}

func badPayload(format string, args ...interface{}) error {
	return &InvalidJobError{Code: CodeBadPayload, Message: fmt.Sprintf(format, args...)}
}

// Sentinels for errors.Is on a *RejectedError.
var (
	// ErrRejected matches every refused publish: the job was not submitted.
	ErrRejected = errors.New("jetinfer: JetStream did not accept the job")
	// ErrStreamFull: the priority's stream is at its message or byte limit
	// (backpressure: try later, the same id is safe to publish again).
	ErrStreamFull = errors.New("jetinfer: the priority's stream is full")
	// ErrNoStream: no stream listens on the job subject (the dispatcher has not created
	// that priority's stream yet).
	ErrNoStream = errors.New("jetinfer: no stream for the job subject")
)

// RejectReason says why JetStream refused a job.
type RejectReason int

const (
	// RejectOther: any other refusal (server down, timeout, payload too large, ...).
	RejectOther RejectReason = iota
	// RejectStreamFull: see ErrStreamFull.
	RejectStreamFull
	// RejectNoStream: see ErrNoStream.
	RejectNoStream
)

func (r RejectReason) String() string {
	switch r {
	case RejectStreamFull:
		return "stream full"
	case RejectNoStream:
		return "no stream"
	}
	return "rejected"
}

// RejectedError: the publish failed, so the job is not submitted. Publishing again with
// the same id is safe (JetStream de-duplicates on Nats-Msg-Id). errors.Is matches
// ErrRejected always, and ErrStreamFull or ErrNoStream by Reason; Unwrap gives the
// NATS error.
type RejectedError struct {
	Subject string
	Reason  RejectReason
	Err     error
}

func (e *RejectedError) Error() string {
	return fmt.Sprintf("jetinfer: publish on %s refused (%s): %v", e.Subject, e.Reason, e.Err)
}

func (e *RejectedError) Unwrap() error { return e.Err }

// Is matches the sentinels of this package.
func (e *RejectedError) Is(target error) bool {
	switch target {
	case ErrRejected:
		return true
	case ErrStreamFull:
		return e.Reason == RejectStreamFull
	case ErrNoStream:
		return e.Reason == RejectNoStream
	}
	return false
}

// StoreError: a Redis command failed (Op names it, e.g. "SET jetinfer:input:<id>").
type StoreError struct {
	Op  string
	Err error
}

func (e *StoreError) Error() string { return fmt.Sprintf("jetinfer: redis %s: %v", e.Op, e.Err) }

func (e *StoreError) Unwrap() error { return e.Err }

// DecodeError: bytes read from Redis are not a result of this wire format.
type DecodeError struct {
	What string
	Err  error
}

func (e *DecodeError) Error() string {
	return fmt.Sprintf("jetinfer: decoding %s: %v", e.What, e.Err)
}

func (e *DecodeError) Unwrap() error { return e.Err }

// IdConflictError: the result stored under the job's id answers another job (other
// inputs or model): the id was reused. Result is that other job's result; publish again
// with a new id.
type IdConflictError struct {
	ID     string
	Result *Result
}

func (e *IdConflictError) Error() string {
	return fmt.Sprintf("jetinfer: job %s: the stored result answers another job with this id (model %s); use a new id", e.ID, e.Result.Model)
}

// TimeoutError: no result arrived before the context ended. Unwrap gives the
// context's error (context.DeadlineExceeded or context.Canceled).
type TimeoutError struct {
	ID  string
	Err error
}

func (e *TimeoutError) Error() string {
	return fmt.Sprintf("jetinfer: no result for %s: %v", e.ID, e.Err)
}

func (e *TimeoutError) Unwrap() error { return e.Err }

// ResultError: a job finished with status error or expired ([Result.Err]).
type ResultError struct {
	ID      string
	Status  Status
	Code    ErrorCode
	Message string
}

func (e *ResultError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "jetinfer: job %s ended %s", e.ID, e.Status)
	if e.Code != "" {
		fmt.Fprintf(&b, " (%s)", e.Code)
	}
	if e.Message != "" {
		fmt.Fprintf(&b, ": %s", e.Message)
	}
	return b.String()
}
