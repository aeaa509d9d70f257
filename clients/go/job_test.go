package jetinfer

// Unit tests without servers: validation, optional job fields, result decoding beyond
// the doc's examples, dtype conversion, Redis URLs and the refusal classes.

import (
	"context"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/nats-io/nats.go"
	"github.com/vmihailenco/msgpack/v5"
)

func codeOf(err error) ErrorCode {
	var e *InvalidJobError
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

func TestValidateRefusesWhatTheServerRefuses(t *testing.T) {
	ok := func() Job { return Job{ID: "go-1", Model: "mlp", Inputs: docInputs()} }
	cases := []struct {
		name string
		edit func(*Job)
		want ErrorCode
	}{
		{"valid", func(*Job) {}, ""},
		{"empty id", func(j *Job) { j.ID = "" }, CodeBadPayload},
		{"id with space", func(j *Job) { j.ID = "a b" }, CodeBadPayload},
		{"id of 129 bytes", func(j *Job) { j.ID = strings.Repeat("a", 129) }, CodeBadPayload},
		{"id of 128 bytes", func(j *Job) { j.ID = strings.Repeat("a", 128) }, ""},
		{"model with a dot", func(j *Job) { j.Model = "m.x" }, CodeInvalidInput},
		{"version with a slash", func(j *Job) { j.Version = "1/2" }, CodeInvalidInput},
		{"version with a dot", func(j *Job) { j.Version = "1.2" }, ""},
		{"no inputs", func(j *Job) { j.Inputs = nil }, CodeInvalidInput},
		{"17 inputs", func(j *Job) { j.Inputs = make([]Tensor, 17) }, CodeInvalidInput},
		{"short data", func(j *Job) { j.Inputs[0].Data = j.Inputs[0].Data[:7] }, CodeInvalidInput},
		{"negative dim", func(j *Job) { j.Inputs[0].Shape = []int64{-2} }, CodeInvalidInput},
		{"unknown dtype", func(j *Job) { j.Inputs[0].DType = "f8" }, CodeInvalidInput},
		{"9 dims", func(j *Job) { j.Inputs = []Tensor{{DType: U8, Shape: make([]int64, 9)}} }, CodeInvalidInput},
		{"scalar", func(j *Job) { j.Inputs = []Tensor{F32Tensor(nil, []float32{3})} }, ""},
	}
	for _, c := range cases {
		j := ok()
		c.edit(&j)
		if got := codeOf(j.Validate()); got != c.want {
			t.Errorf("%s: code %q, want %q (%v)", c.name, got, c.want, j.Validate())
		}
	}
}

func TestOptionalFieldsAreWrittenInOrderAndOnlyWhenSet(t *testing.T) {
	deadline := time.UnixMilli(1700000000123)
	j := &Job{ID: "j", Model: "m", Inputs: docInputs(), Version: "2", Deadline: deadline,
		NoCache: true, Meta: map[string]string{"z": "1", "a": "2"}}
	b, err := EncodeJob(j, nil)
	if err != nil {
		t.Fatal(err)
	}
	d := msgpack.NewDecoder(strings.NewReader(string(b)))
	var keys []string
	values := map[string]interface{}{}
	if err := eachKey(d, func(k string) error {
		keys = append(keys, k)
		v, err := d.DecodeInterface()
		values[k] = v
		return err
	}); err != nil {
		t.Fatal(err)
	}
	wantKeys := []string{"v", "id", "model", "version", "inputs", "deadline_ms", "cache", "meta"}
	if !reflect.DeepEqual(keys, wantKeys) {
		t.Fatalf("keys %v, want %v", keys, wantKeys)
	}
	if fmt.Sprint(values["deadline_ms"]) != "1700000000123" || values["cache"] != false ||
		values["version"] != "2" {
		t.Fatalf("values %v", values)
	}
	// Meta is sorted by key, as the Rust encoder's BTreeMap writes it.
	if !strings.Contains(string(b), "\xa4meta\x82\xa1a\xa12\xa1z\xa11") {
		t.Fatalf("meta not sorted: %x", b)
	}
	// Unset optional fields are absent: the 9.1 job has 4 keys.
	b, _ = EncodeJob(&Job{ID: "j", Model: "m", Inputs: docInputs(), Meta: map[string]string{}}, nil)
	if b[0] != 0x84 {
		t.Fatalf("a job without options has map header %#x, want 0x84", b[0])
	}
}

func TestEmptyDataIsBinNotNil(t *testing.T) {
	b := EncodeInputs([]Tensor{{DType: F32, Shape: []int64{0}}})
	if !strings.HasSuffix(string(b), "\xa4data\xc4\x00") {
		t.Fatalf("empty data encoded as %x", b)
	}
}

func TestResultDecodingSkipsUnknownKeysAndRejectsOtherVersions(t *testing.T) {
	enc := func(m map[string]interface{}) []byte {
		b, err := msgpack.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	r, err := DecodeResult(enc(map[string]interface{}{
		"v": 1, "id": "x", "status": "expired", "model": "m", "trace_id": "abc",
		"error":   map[string]interface{}{"code": "expired", "message": "late", "later": 1},
		"timings": map[string]interface{}{"queued_ms": 5000.5, "batch_size": 0},
	}))
	if err != nil {
		t.Fatal(err)
	}
	var re *ResultError
	if !errors.As(r.Err(), &re) || re.Code != CodeExpired || re.Status != StatusExpired || re.Message != "late" {
		t.Fatalf("Err() = %#v", r.Err())
	}
	if r.Timings.QueuedMs != 5000.5 || len(r.Outputs) != 0 {
		t.Fatalf("result %+v", r)
	}
	for name, m := range map[string]map[string]interface{}{
		"v 2":       {"v": 2, "id": "x", "status": "ok"},
		"no status": {"v": 1, "id": "x"},
		"no v":      {"id": "x", "status": "ok"},
		"bad shape": {"v": 1, "id": "x", "status": "ok", "outputs": []interface{}{map[string]interface{}{"shape": "2"}}},
	} {
		var de *DecodeError
		if _, err := DecodeResult(enc(m)); !errors.As(err, &de) {
			t.Errorf("%s: want a *DecodeError, got %v", name, err)
		}
	}
	if _, err := DecodeResult([]byte{0xc1}); err == nil {
		t.Error("0xc1 (never used) decoded as a result")
	}
}

func TestFloat64sReadsEveryDtype(t *testing.T) {
	cases := []struct {
		t    Tensor
		want []float64
	}{
		// f16: 1.0, -2.0, 65504 (max), 2^-24 (smallest subnormal), +inf.
		{Tensor{DType: F16, Data: []byte{0x00, 0x3c, 0x00, 0xc0, 0xff, 0x7b, 0x01, 0x00, 0x00, 0x7c}},
			[]float64{1, -2, 65504, math.Pow(2, -24), math.Inf(1)}},
		// bf16 1.0 = 0x3f80, -0.5 = 0xbf00.
		{Tensor{DType: BF16, Data: []byte{0x80, 0x3f, 0x00, 0xbf}}, []float64{1, -0.5}},
		{I64Tensor([]int64{2}, []int64{-3, 1 << 40}), []float64{-3, 1 << 40}},
		{I32Tensor([]int64{1}, []int32{-7}), []float64{-7}},
		{Tensor{DType: I8, Data: []byte{0xff}}, []float64{-1}},
		{U8Tensor([]int64{2}, []byte{0, 255}), []float64{0, 255}},
		{F64Tensor([]int64{1}, []float64{0.1}), []float64{0.1}},
	}
	for _, c := range cases {
		got, err := c.t.Float64s()
		if err != nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: got %v %v, want %v", c.t.DType, got, err, c.want)
		}
	}
	if _, err := (Tensor{DType: F32, Data: []byte{1, 2, 3}}).Float64s(); err == nil {
		t.Error("3 bytes of f32 read without error")
	}
	if _, err := (Tensor{DType: U8}).Float32s(); err == nil {
		t.Error("Float32s of a u8 tensor read without error")
	}
}

func TestRedisURLs(t *testing.T) {
	for _, c := range []struct{ url, network, address string }{
		{"redis://127.0.0.1:6380", "tcp", "127.0.0.1:6380"},
		{"redis://example.org/2", "tcp", "example.org:6379"},
		{"rediss://:secret@cache.example.org:6390/0", "tcp", "cache.example.org:6390"},
		{"redis://[::1]:7000", "tcp", "[::1]:7000"},
		{"unix:///tmp/r.sock", "unix", "/tmp/r.sock"},
		{"redis+unix:///tmp/x/r.sock?db=3", "unix", "/tmp/x/r.sock"},
	} {
		a, err := parseRedisURL(c.url)
		if err != nil || a.network != c.network || a.address != c.address {
			t.Errorf("%s: got %q %q %v, want %q %q", c.url, a.network, a.address, err, c.network, c.address)
		}
	}
	for _, bad := range []string{"http://x", "unix://", "redis://h/abc", "redis+unix:///s?db=x"} {
		if _, err := parseRedisURL(bad); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}

func TestRejectReasons(t *testing.T) {
	full := &nats.APIError{Code: 503, ErrorCode: 10077, Description: "maximum messages exceeded"}
	bytesFull := &nats.APIError{Code: 503, ErrorCode: 10077, Description: "maximum bytes exceeded"}
	for _, c := range []struct {
		err  error
		want RejectReason
	}{
		{full, RejectStreamFull},
		{bytesFull, RejectStreamFull},
		{nats.ErrNoStreamResponse, RejectNoStream},
		{nats.ErrTimeout, RejectOther},
		{&nats.APIError{Code: 400, ErrorCode: 10060, Description: "expected stream does not match"}, RejectOther},
	} {
		if got := rejectReason(c.err); got != c.want {
			t.Errorf("%v: %v, want %v", c.err, got, c.want)
		}
	}
	e := error(&RejectedError{Subject: "s", Reason: RejectStreamFull, Err: full})
	if !errors.Is(e, ErrStreamFull) || !errors.Is(e, ErrRejected) || errors.Is(e, ErrNoStream) {
		t.Fatal("errors.Is on a full stream's RejectedError")
	}
	var api *nats.APIError
	if !errors.As(e, &api) || api.ErrorCode != 10077 {
		t.Fatal("the NATS error is not reachable through Unwrap")
	}
}

func TestSubmitRefusesBeforeTouchingTheServers(t *testing.T) {
	// A client whose connections are never used: validation comes first.
	c := &Client{cfg: newConfig(nil), pool: &redis.Pool{}}
	if _, err := c.Submit(context.Background(), "P1", &Job{ID: "x", Model: "m", Inputs: docInputs()}); codeOf(err) != CodeInvalidInput {
		t.Fatalf("priority P1 (not a subject token): %v", err)
	}
	if _, err := c.Submit(context.Background(), P1, &Job{ID: "x y", Model: "m", Inputs: docInputs()}); codeOf(err) != CodeBadPayload {
		t.Fatalf("bad id: %v", err)
	}
	if _, err := c.Watch("a*"); codeOf(err) != CodeBadPayload {
		t.Fatalf("Watch with a wildcard id: %v", err)
	}
	for s, want := range map[string]Priority{"p0": P0, "P1": P1, "2": P2} {
		if p, err := ParsePriority(s); err != nil || p != want {
			t.Errorf("ParsePriority(%q) = %v %v", s, p, err)
		}
	}
	if _, err := ParsePriority("p3"); err == nil {
		t.Error("p3 parsed")
	}
}
