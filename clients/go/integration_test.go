package jetinfer

// Integration tests against a running jetinfer (nats-server with the dispatcher's
// streams, redis-server, a worker serving the sample CPU models of models/out). They run
// when JETINFER_TEST_NATS_URL and JETINFER_TEST_REDIS_URL are set, are skipped
// otherwise, and fail instead of skipping when JETINFER_TEST_REQUIRE_SERVERS=1
// (tests/tests/go_client.rs sets it).

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/nats-io/nats.go"
	"github.com/vmihailenco/msgpack/v5"
)

// liveClient connects to the test servers, or skips.
func liveClient(t *testing.T, opts ...Option) *Client {
	t.Helper()
	natsURL, redisURL := os.Getenv("JETINFER_TEST_NATS_URL"), os.Getenv("JETINFER_TEST_REDIS_URL")
	if natsURL == "" || redisURL == "" {
		if os.Getenv("JETINFER_TEST_REQUIRE_SERVERS") == "1" {
			t.Fatal("JETINFER_TEST_NATS_URL and JETINFER_TEST_REDIS_URL are required")
		}
		t.Skip("set JETINFER_TEST_NATS_URL and JETINFER_TEST_REDIS_URL to run against servers")
	}
	c, err := Connect(natsURL, redisURL, append([]Option{WithName("go-client-test")}, opts...)...)
	if err != nil {
		t.Fatalf("connecting: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

var testRun = fmt.Sprintf("gotest-%08x", rand.New(rand.NewSource(time.Now().UnixNano())).Uint32())

func testID(name string) string { return testRun + "-" + name }

// mlpInput is one valid input of the sample model mlp: f32 [16].
func mlpInput(scale float32) []Tensor {
	v := make([]float32, 16)
	for i := range v {
		v[i] = scale * float32(i)
	}
	return []Tensor{F32Tensor([]int64{16}, v)}
}

func timeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestLiveSubmitWaitWithOptionsAndDuplicate(t *testing.T) {
	c := liveClient(t)
	ctx := timeout(t, 60*time.Second)
	job := &Job{ID: testID("opts"), Model: "mlp", Inputs: mlpInput(0.5), Version: "1",
		Deadline: time.Now().Add(time.Minute), NoCache: true, Meta: map[string]string{"user": "gopher"}}
	if r, err := c.Get(ctx, job.ID); r != nil || err != nil {
		t.Fatalf("Get before submitting: %v %v", r, err)
	}
	w, err := c.Watch(job.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	sub, err := c.Submit(ctx, P0, job)
	if err != nil {
		t.Fatal(err)
	}
	if sub.Duplicate || sub.ByReference || sub.Stream != "JETINFER_P0" {
		t.Fatalf("submitted %+v", sub)
	}
	r, err := w.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Err(); err != nil {
		t.Fatalf("result: %v", err)
	}
	if r.ID != job.ID || r.Model != "mlp" || r.Version != "1" || r.Meta["user"] != "gopher" ||
		r.Cached || r.Attempts < 1 || r.CompletedAtMs == 0 {
		t.Fatalf("result %+v", r)
	}
	if len(r.Outputs) != 1 || r.Outputs[0].Validate() != nil {
		t.Fatalf("outputs %+v", r.Outputs)
	}
	// The same id again: JetStream de-duplicates it, and the result stays the first one.
	again, err := c.Submit(ctx, P0, job)
	if err != nil || !again.Duplicate {
		t.Fatalf("re-submitting the same id: %+v %v", again, err)
	}
	if r2, err := c.Get(ctx, job.ID); err != nil || r2.CompletedAtMs != r.CompletedAtMs {
		t.Fatalf("result after the duplicate: %+v %v", r2, err)
	}
}

func TestLiveAReusedIdWithOtherInputsIsAnIdConflict(t *testing.T) {
	c := liveClient(t)
	ctx := timeout(t, 60*time.Second)
	id := testID("reuse")
	first, err := c.SubmitAndWait(ctx, P1, &Job{ID: id, Model: "mlp", Inputs: mlpInput(0.5)})
	if err != nil || first.InputsDigest == "" {
		t.Fatalf("first job: %+v %v", first, err)
	}
	_, err = c.SubmitAndWait(ctx, P1, &Job{ID: id, Model: "mlp", Inputs: mlpInput(0.25)})
	var conflict *IdConflictError
	if !errors.As(err, &conflict) || conflict.Result.InputsDigest != first.InputsDigest {
		t.Fatalf("reusing the id with other inputs: %v", err)
	}
	if again, err := c.SubmitAndWait(ctx, P1, &Job{ID: id, Model: "mlp", Inputs: mlpInput(0.5)}); err != nil || again.InputsDigest != first.InputsDigest {
		t.Fatalf("the same job again: %+v %v", again, err)
	}
}

func TestLiveInputsByReferenceGoThroughRedis(t *testing.T) {
	c := liveClient(t, WithInlineLimit(0))
	ctx := timeout(t, 60*time.Second)
	job := &Job{ID: testID("ref"), Model: "mlp", Inputs: mlpInput(0.25)}
	r, err := c.SubmitAndWait(ctx, P1, job)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Err(); err != nil {
		t.Fatalf("result: %v", err)
	}
	// The same inputs inline give the same outputs.
	inline := liveClient(t)
	r2, err := inline.SubmitAndWait(ctx, P1, &Job{ID: testID("ref-inline"), Model: "mlp", Inputs: mlpInput(0.25), NoCache: true})
	if err != nil || r2.Err() != nil {
		t.Fatalf("inline twin: %v %v", err, r2.Err())
	}
	a, _ := r.Outputs[0].Float64s()
	b, _ := r2.Outputs[0].Float64s()
	if fmt.Sprint(a) != fmt.Sprint(b) {
		t.Fatalf("by reference %v, inline %v", a, b)
	}
	// The worker deletes the stored inputs with the result.
	conn := c.Redis().Get()
	defer conn.Close()
	if n, err := redis.Int(conn.Do("EXISTS", c.InputKey(job.ID))); err != nil || n != 0 {
		t.Fatalf("stored inputs still there after the result: %d %v", n, err)
	}
}

func TestLiveStoredInputsAreTheWireValueWithTTL(t *testing.T) {
	// Submit's first step alone (no job is published, so no worker deletes the value):
	// the stored value is example 9.5's encoding, with the reference's length and digest
	// and a TTL of the deadline plus a minute.
	c := liveClient(t, WithInlineLimit(0))
	ctx := timeout(t, 30*time.Second)
	job := &Job{ID: testID("stored"), Model: "mlp", Inputs: mlpInput(1), Deadline: time.Now().Add(10 * time.Minute)}
	ref, err := c.storeInputs(ctx, job)
	if err != nil {
		t.Fatal(err)
	}
	conn := c.Redis().Get()
	defer conn.Close()
	raw, err := redis.Bytes(conn.Do("GET", c.InputKey(job.ID)))
	if err != nil {
		t.Fatal(err)
	}
	back, err := DecodeInputs(raw)
	if err != nil || uint64(len(raw)) != ref.Bytes || InputsDigest(back) != ref.Digest {
		t.Fatalf("stored %d bytes %v, reference %+v", len(raw), err, ref)
	}
	ttl, err := redis.Int64(conn.Do("PTTL", c.InputKey(job.ID)))
	if err != nil || ttl < int64(10*time.Minute/time.Millisecond) || ttl > int64(11*time.Minute/time.Millisecond) {
		t.Fatalf("PTTL %d (want the deadline + 1 min), %v", ttl, err)
	}
	_, _ = conn.Do("DEL", c.InputKey(job.ID))
}

func TestLiveErrorAndExpiredResultsCarryTheirCode(t *testing.T) {
	c := liveClient(t)
	ctx := timeout(t, 60*time.Second)
	wrong := &Job{ID: testID("wrong-shape"), Model: "mlp", Inputs: []Tensor{F32Tensor([]int64{3}, []float32{1, 2, 3})}}
	late := &Job{ID: testID("late"), Model: "mlp", Inputs: mlpInput(1), Deadline: time.Now().Add(-time.Second)}
	for _, c2 := range []struct {
		job    *Job
		status Status
		code   ErrorCode
	}{{wrong, StatusError, CodeInvalidInput}, {late, StatusExpired, CodeExpired}} {
		r, err := c.SubmitAndWait(ctx, P1, c2.job)
		if err != nil {
			t.Fatal(err)
		}
		var re *ResultError
		if !errors.As(r.Err(), &re) || re.Status != c2.status || re.Code != c2.code || re.ID != c2.job.ID {
			t.Errorf("%s: Err() = %v, want status %s code %s", c2.job.ID, r.Err(), c2.status, c2.code)
		}
	}
}

func TestLivePublishRefusals(t *testing.T) {
	c := liveClient(t)
	ctx := timeout(t, 30*time.Second)
	_, err := c.Publish(ctx, "jetinfer-gotest.nostream."+testRun, testID("nostream"), []byte{0x80})
	if !errors.Is(err, ErrNoStream) || !errors.Is(err, ErrRejected) {
		t.Fatalf("publish without a stream: %v", err)
	}
	// A stream of one message that refuses new ones when full, as the priority streams do.
	js, err := c.NATS().JetStream()
	if err != nil {
		t.Fatal(err)
	}
	name := "GOTEST_FULL_" + testRun[len("gotest-"):]
	subject := "jetinfer-gotest.full." + testRun
	if _, err := js.AddStream(&nats.StreamConfig{Name: name, Subjects: []string{subject},
		MaxMsgs: 1, Discard: nats.DiscardNew, Storage: nats.MemoryStorage}); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = js.DeleteStream(name) }()
	if _, err := c.Publish(ctx, subject, testID("full-1"), []byte{0x80}); err != nil {
		t.Fatalf("first message: %v", err)
	}
	_, err = c.Publish(ctx, subject, testID("full-2"), []byte{0x80})
	var rej *RejectedError
	if !errors.Is(err, ErrStreamFull) || errors.Is(err, ErrNoStream) || !errors.As(err, &rej) || rej.Subject != subject {
		t.Fatalf("publish to a full stream: %v", err)
	}
}

func TestLiveWaitTimesOutWithTheContext(t *testing.T) {
	c := liveClient(t)
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := c.Wait(ctx, testID("never-published"))
	var te *TimeoutError
	if !errors.As(err, &te) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait: %v", err)
	}
	if d := time.Since(start); d < 300*time.Millisecond || d > 3*time.Second {
		t.Fatalf("Wait returned after %v", d)
	}
}

// announce writes a minimal ok result for id into Redis and, when notify, publishes its
// completion notice, as a worker does.
func announce(t *testing.T, c *Client, id string, notify bool) {
	value, err := msgpack.Marshal(map[string]interface{}{"v": 1, "id": id, "status": "ok", "model": "mlp"})
	if err != nil {
		t.Error(err)
		return
	}
	conn := c.Redis().Get()
	defer conn.Close()
	if _, err := conn.Do("SET", c.ResultKey(id), value, "PX", 60000); err != nil {
		t.Error(err)
	}
	if notify {
		if err := c.NATS().Publish("jetinfer.done."+id, []byte("ok")); err != nil {
			t.Error(err)
		}
	}
}

func TestLiveWaitWakesOnTheNoticeAndPollsWithout(t *testing.T) {
	for _, c := range []struct {
		name      string
		notify    bool
		poll      time.Duration
		returnsIn time.Duration
	}{
		// Polls 30 s apart: only the notice can end the wait within 5 s.
		{"notice", true, 30 * time.Second, 5 * time.Second},
		// No notice: the polls find the result.
		{"polling", false, 50 * time.Millisecond, 5 * time.Second},
	} {
		client := liveClient(t)
		client.cfg.pollFirst, client.cfg.pollMax = c.poll, c.poll
		id := testID("wake-" + c.name)
		ctx := timeout(t, 30*time.Second)
		w, err := client.Watch(id)
		if err != nil {
			t.Fatal(err)
		}
		time.AfterFunc(200*time.Millisecond, func() { announce(t, client, id, c.notify) })
		start := time.Now()
		r, err := w.Wait(ctx)
		w.Close()
		if err != nil || r.ID != id || r.Status != StatusOK {
			t.Fatalf("%s: %+v %v", c.name, r, err)
		}
		if d := time.Since(start); d > c.returnsIn {
			t.Fatalf("%s: Wait returned after %v", c.name, d)
		}
	}
}
