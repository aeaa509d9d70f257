package jetinfer

import (
	"fmt"
	"strings"
	"time"
)

// Priority is a job's class; each has its own JetStream stream (JETINFER_P0..P2).
type Priority string

// The priority classes, highest first, with their default deadlines.
const (
	P0 Priority = "p0" // real-time, default deadline 5 s
	P1 Priority = "p1" // interactive, 30 s
	P2 Priority = "p2" // batch, 300 s
)

// ParsePriority reads "p0", "P1" or "2".
func ParsePriority(s string) (Priority, error) {
	switch strings.TrimPrefix(strings.ToLower(s), "p") {
	case "0":
		return P0, nil
	case "1":
		return P1, nil
	case "2":
		return P2, nil
	}
	return "", fmt.Errorf("jetinfer: unknown priority %q (expected p0, p1 or p2)", s)
}

// Subject is where a job of model is published at this priority:
// jetinfer.jobs.<priority>.<model>.
func (p Priority) Subject(model string) string {
	return "jetinfer.jobs." + string(p) + "." + model
}

// Job is one inference job (section 3). The zero value of every optional field means
// "unset": it is left out of the message.
type Job struct {
	// ID is the job id: 1..128 bytes of [A-Za-z0-9._:-], unique per job. It is also the
	// Nats-Msg-Id (de-duplication) and the result key.
	ID string
	// Model is the model name: 1..64 bytes of [A-Za-z0-9_-].
	Model string
	// Inputs are the model's arguments in order, one sample each (no batch dimension).
	Inputs []Tensor
	// Version pins the model version; "" = whichever version the workers serve.
	Version string
	// Deadline is when the job stops being worth running (sent as Unix ms); a job past it
	// ends with status expired. Zero = publish time + the priority's default.
	Deadline time.Time
	// NoCache forbids the result cache to answer this job (sent as cache: false).
	NoCache bool
	// Meta is echoed in the result.
	Meta map[string]string
}

// Validate checks what a server checks without the model (section 5): the id
// (bad_payload), the model name, version, input count and each tensor (invalid_input).
func (j *Job) Validate() error {
	if err := ValidateJobID(j.ID); err != nil {
		return err
	}
	if !validName(j.Model, false) {
		return invalidInput("model name %q is not [A-Za-z0-9_-]{1,64}", j.Model)
	}
	if j.Version != "" && !validName(j.Version, true) {
		return invalidInput("version %q is not [A-Za-z0-9._-]{1,64}", j.Version)
	}
	if len(j.Inputs) == 0 || len(j.Inputs) > MaxInputs {
		return invalidInput("a job needs 1..%d inputs, got %d", MaxInputs, len(j.Inputs))
	}
	for i, t := range j.Inputs {
		if err := t.Validate(); err != nil {
			return invalidInput("input %d: %s", i, err.(*InvalidJobError).Message)
		}
	}
	return nil
}

// ValidateJobID checks a job id: 1..128 bytes of [A-Za-z0-9._:-] (bad_payload).
func ValidateJobID(id string) error {
	if len(id) == 0 || len(id) > 128 {
		return badPayload("job id must be 1..128 bytes, got %d", len(id))
	}
	for _, c := range []byte(id) {
		if !alnum(c) && c != '.' && c != '_' && c != ':' && c != '-' {
			return badPayload("job id %q has character %q outside [A-Za-z0-9._:-]", id, c)
		}
	}
	return nil
}

// validName: 1..64 bytes of [A-Za-z0-9_-], and '.' when dot (versions).
func validName(s string, dot bool) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for _, c := range []byte(s) {
		if !alnum(c) && c != '_' && c != '-' && !(dot && c == '.') {
			return false
		}
	}
	return true
}

func alnum(c byte) bool {
	return ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z') || ('0' <= c && c <= '9')
}

// dataBytes totals the inputs' tensor data, what the inline limit is compared with.
func (j *Job) dataBytes() int {
	n := 0
	for _, t := range j.Inputs {
		n += len(t.Data)
	}
	return n
}
