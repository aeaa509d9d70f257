package jetinfer

// Jobs spread over partition streams and inputs over input stores (docs/wire-format.md
// sections 2.1 and 10). The live tests read the stack's layout from the environment:
// JETINFER_TEST_PARTITIONS (the dispatcher's --partitions, default 1) and
// JETINFER_TEST_INPUTS_REDIS_URLS (the workers' --inputs-redis-url list, comma-separated,
// default none), so they check a plain stack (everything in partition 0 and store 0) and
// a spread one alike. The count's re-reading is checked against a bare nats-server
// whose streams the test makes.

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/nats-io/nats.go"
)

// stackLayout is the stack's partition count and extra input stores.
func stackLayout(t *testing.T) (int, []string) {
	n := 1
	if v := os.Getenv("JETINFER_TEST_PARTITIONS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil {
			t.Fatalf("JETINFER_TEST_PARTITIONS=%q", v)
		}
	}
	var urls []string
	for _, u := range strings.Split(os.Getenv("JETINFER_TEST_INPUTS_REDIS_URLS"), ",") {
		if u != "" {
			urls = append(urls, u)
		}
	}
	t.Logf("stack layout: partitions=%d input_stores=%d", n, len(urls)+1)
	return n, urls
}

// holders says, per id, which input stores hold its inputs.
func holders(t *testing.T, c *Client, ids []string) [][]int {
	out := make([][]int, len(ids))
	for n, store := range c.InputStores() {
		conn := store.Get()
		for k, id := range ids {
			if found, err := redis.Int(conn.Do("EXISTS", c.InputKey(id))); err != nil {
				t.Fatal(err)
			} else if found == 1 {
				out[k] = append(out[k], n)
			}
		}
		conn.Close()
	}
	return out
}

func TestLiveJobsSpreadOverPartitionsAndInputStores(t *testing.T) {
	parts, urls := stackLayout(t)
	c := liveClient(t, WithInlineLimit(0), WithInputsRedisURLs(urls...))
	ctx := timeout(t, 120*time.Second)
	prios := []Priority{P0, P1, P2}
	var subs []*Submitted
	for i := 0; i < 201; i++ {
		job := &Job{ID: testID(fmt.Sprintf("spread-%d", i)), Model: "mlp", Inputs: mlpInput(float32(i % 5)), NoCache: true}
		sub, err := c.Submit(ctx, prios[i%3], job)
		if err != nil {
			t.Fatal(err)
		}
		// JetStream's ack names the stream that stored the job: the id's partition.
		if want := PartitionStream(prios[i%3], PartitionFor(job.ID, parts)); sub.Stream != want || !sub.ByReference {
			t.Fatalf("%s went to %s (by reference %v), want %s", job.ID, sub.Stream, sub.ByReference, want)
		}
		subs = append(subs, sub)
	}
	for _, p := range prios {
		if got := c.Partitions(ctx, p); got != parts {
			t.Fatalf("%s: the client read %d partitions, the stack has %d", p, got, parts)
		}
		used := map[string]bool{}
		for i, s := range subs {
			if prios[i%3] == p {
				used[s.Stream] = true
			}
		}
		if len(used) != parts {
			t.Fatalf("%s: jobs went to %v, want every one of %d partitions", p, used, parts)
		}
	}
	// Every result is right: the same inputs give the same outputs, whatever the
	// partition and the input store.
	first := map[int][]float64{}
	var ids []string
	for i, s := range subs {
		r, err := c.Wait(ctx, s.ID)
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Err(); err != nil || len(r.Outputs) != 1 {
			t.Fatalf("%s: %v, %d outputs", s.ID, err, len(r.Outputs))
		}
		out, _ := r.Outputs[0].Float64s()
		if want, seen := first[i%5]; !seen {
			first[i%5] = out
		} else {
			for j := range want {
				if math.Abs(out[j]-want[j]) > 1e-4+1e-3*math.Abs(want[j]) {
					t.Fatalf("%s: output %v differs from %v for the same inputs", s.ID, out, want)
				}
			}
		}
		ids = append(ids, s.ID)
	}
	// The worker found each job's inputs in the store its reference named, and deleted them.
	for k, h := range holders(t, c, ids) {
		if len(h) != 0 {
			t.Fatalf("%s: inputs still in stores %v after the result", ids[k], h)
		}
	}
}

func TestLiveEachInputStoreHoldsExactlyItsJobsInputs(t *testing.T) {
	_, urls := stackLayout(t)
	c := liveClient(t, WithInlineLimit(0), WithInputsRedisURLs(urls...))
	ctx := timeout(t, 60*time.Second)
	// The dispatcher answers jobs of an unknown model itself and leaves their inputs (a
	// dead letter's replay needs them): where they stay is where the client put them.
	var ids []string
	for i := 0; i < 90; i++ {
		job := &Job{ID: testID(fmt.Sprintf("nomodel-%d", i)), Model: "no_such_model", Inputs: mlpInput(1)}
		if _, err := c.Submit(ctx, P1, job); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, job.ID)
	}
	for _, id := range ids {
		r, err := c.Wait(ctx, id)
		if err != nil || r.Error == nil || r.Error.Code != CodeUnknownModel {
			t.Fatalf("%s: %+v %v", id, r, err)
		}
	}
	stores := len(c.InputStores())
	share := make([]int, stores)
	for k, h := range holders(t, c, ids) {
		if want := InputStoreFor(ids[k], stores); len(h) != 1 || h[0] != want {
			t.Fatalf("%s: inputs in stores %v, want only store %d", ids[k], h, want)
		}
		share[h[0]]++
	}
	for n, got := range share {
		if got < 10 {
			t.Fatalf("store %d holds %d of %d jobs' inputs: %v", n, got, len(ids), share)
		}
	}
	for _, store := range c.InputStores() {
		conn := store.Get()
		for _, id := range ids {
			_, _ = conn.Do("DEL", c.InputKey(id))
		}
		conn.Close()
	}
}

// liveRedisURL is the test Redis, with the skip rules of the live tests (these run
// against a nats-server of their own; Redis is not used by inline jobs).
func liveRedisURL(t *testing.T) string {
	url := os.Getenv("JETINFER_TEST_REDIS_URL")
	if url == "" {
		if os.Getenv("JETINFER_TEST_REQUIRE_SERVERS") == "1" {
			t.Fatal("JETINFER_TEST_REDIS_URL is required")
		}
		t.Skip("set JETINFER_TEST_REDIS_URL to run against servers")
	}
	return url
}

// bareNATS starts a nats-server with JetStream on a free port for the test
// ($JETINFER_NATS_SERVER, else the repository's .venv/bin/nats-server, else PATH);
// config, when not empty, is the text of a configuration file (users, permissions).
func bareNATS(t *testing.T, config string) string {
	t.Helper()
	bin := os.Getenv("JETINFER_NATS_SERVER")
	if bin == "" {
		if _, err := os.Stat("../../.venv/bin/nats-server"); err == nil {
			bin = "../../.venv/bin/nats-server"
		} else if bin, err = exec.LookPath("nats-server"); err != nil {
			if os.Getenv("JETINFER_TEST_REQUIRE_SERVERS") == "1" {
				t.Fatal("no nats-server (set JETINFER_NATS_SERVER)")
			}
			t.Skip("no nats-server (set JETINFER_NATS_SERVER)")
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	dir := t.TempDir()
	args := []string{"-js", "-a", "127.0.0.1", "-p", strconv.Itoa(port), "-sd", dir}
	if config != "" {
		path := dir + "/nats.conf"
		if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, "-c", path)
	}
	cmd := exec.Command(bin, args...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	for start := time.Now(); ; time.Sleep(50 * time.Millisecond) {
		if conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			conn.Close()
			return fmt.Sprintf("nats://127.0.0.1:%d", port)
		}
		if time.Since(start) > 10*time.Second {
			t.Fatalf("nats-server on port %d did not start", port)
		}
	}
}

// jsAPI sends a JetStream API request (JSON) and fails the test on an error answer.
func jsAPI(t *testing.T, nc *nats.Conn, subject string, body interface{}) {
	t.Helper()
	var data []byte
	if body != nil {
		data, _ = json.Marshal(body)
	}
	msg, err := nc.Request(subject, data, 5*time.Second)
	if err != nil {
		t.Fatalf("%s: %v", subject, err)
	}
	var reply streamInfoReply
	if err := json.Unmarshal(msg.Data, &reply); err != nil || reply.Error != nil {
		t.Fatalf("%s: %s", subject, msg.Data)
	}
}

// makePartitions creates JETINFER_P1 with n partitions, as a dispatcher would.
func makePartitions(t *testing.T, nc *nats.Conn, n int) {
	jsAPI(t, nc, "$JS.API.STREAM.CREATE.JETINFER_P1", p1Partition0(n))
	for k := 1; k < n; k++ {
		jsAPI(t, nc, fmt.Sprintf("$JS.API.STREAM.CREATE.JETINFER_P1_%d", k), map[string]interface{}{
			"name": fmt.Sprintf("JETINFER_P1_%d", k), "subjects": []string{fmt.Sprintf("jetinfer.jobs.p1.*.%d", k)},
			"storage": "memory"})
	}
}

// p1Partition0 is JETINFER_P1's configuration with partition count n in its metadata
// (nats.go's StreamConfig predates stream metadata).
func p1Partition0(n int) map[string]interface{} {
	return map[string]interface{}{"name": "JETINFER_P1", "subjects": []string{"jetinfer.jobs.p1.*"},
		"storage": "memory", "metadata": map[string]string{PartitionsMetadataKey: strconv.Itoa(n)}}
}

// idIn is a fresh job id of partition k out of n.
func idIn(k, n int, tag string) string {
	for i := 0; ; i++ {
		if id := testID(fmt.Sprintf("%s-%d", tag, i)); PartitionFor(id, n) == k {
			return id
		}
	}
}

func TestLivePartitionCountIsReadAgainWhenAStreamIsMissing(t *testing.T) {
	redisURL := liveRedisURL(t)
	url := bareNATS(t, "")
	c, err := Connect(url, redisURL)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := timeout(t, 30*time.Second)
	submit := func(c *Client, id string) (*Submitted, error) {
		return c.Submit(ctx, P1, &Job{ID: id, Model: "mlp", Inputs: mlpInput(1)})
	}
	// Before the dispatcher made the streams: refused, and the count is read again later.
	if _, err := submit(c, idIn(2, 3, "early")); !errors.Is(err, ErrNoStream) {
		t.Fatalf("publish before the streams exist: %v", err)
	}
	makePartitions(t, c.NATS(), 3)
	if sub, err := submit(c, idIn(2, 3, "three")); err != nil || sub.Stream != "JETINFER_P1_2" {
		t.Fatalf("with 3 partitions: %+v %v", sub, err)
	}
	// The dispatcher restarted with --partitions 2: partition 2 is gone, N is 2.
	jsAPI(t, c.NATS(), "$JS.API.STREAM.DELETE.JETINFER_P1_2", nil)
	jsAPI(t, c.NATS(), "$JS.API.STREAM.UPDATE.JETINFER_P1", p1Partition0(2))
	moved := idIn(2, 3, "moved")
	sub, err := submit(c, moved)
	if err != nil || sub.Stream != PartitionStream(P1, PartitionFor(moved, 2)) || c.Partitions(ctx, P1) != 2 {
		t.Fatalf("after lowering to 2: %+v %v (count %d)", sub, err, c.Partitions(ctx, P1))
	}
	// A fixed count is not read again: the job's partition has no stream.
	fixed, err := Connect(url, redisURL, WithPartitions(3))
	if err != nil {
		t.Fatal(err)
	}
	defer fixed.Close()
	_, err = submit(fixed, idIn(2, 3, "fixed"))
	var rej *RejectedError
	if !errors.As(err, &rej) || !errors.Is(err, ErrNoStream) || !strings.HasSuffix(rej.Subject, ".mlp.2") {
		t.Fatalf("a fixed count of 3 over 2 streams: %v", err)
	}
}

func TestLiveAnUnreadablePartitionCountIsOnePartitionWithOneWarning(t *testing.T) {
	redisURL := liveRedisURL(t)
	// A producer allowed to publish jobs but not to read stream info.
	url := bareNATS(t, `authorization { users = [
		{ user: admin, password: a }
		{ user: producer, password: p, permissions: {
			publish: { allow: ["jetinfer.jobs.>"] }, subscribe: { allow: ["_INBOX.>"] } } }
	] }`)
	admin, err := nats.Connect(url, nats.UserInfo("admin", "a"))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	makePartitions(t, admin, 3)
	var warnings []string
	c, err := Connect(url, redisURL,
		WithNATSOptions(nats.UserInfo("producer", "p"), nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {})),
		// The denied info request times out: do not wait 10 s.
		WithPublishTimeout(500*time.Millisecond),
		WithLogf(func(format string, args ...interface{}) { warnings = append(warnings, fmt.Sprintf(format, args...)) }))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := timeout(t, 30*time.Second)
	for k := 0; k < 6; k++ {
		sub, err := c.Submit(ctx, P1, &Job{ID: idIn(k%3, 3, "denied"), Model: "mlp", Inputs: mlpInput(1)})
		if err != nil || sub.Stream != "JETINFER_P1" {
			t.Fatalf("publish %d: %+v %v", k, sub, err)
		}
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], "JETINFER_P1") {
		t.Fatalf("warnings: %q", warnings)
	}
	t.Log(warnings[0])
}
