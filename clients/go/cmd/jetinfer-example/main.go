// Command jetinfer-example publishes golden samples (models/out/golden.json, outputs
// computed by PyTorch) as jobs through the Go client, inline and with the inputs by
// reference, waits for their results and compares them with the golden outputs. It
// prints PASS and exits 0 only when every result is right.
//
//	jetinfer-example --nats-url nats://127.0.0.1:4222 --redis-url redis://127.0.0.1:6379 \
//	    --golden models/out/golden.json --models pair,imgmean --count 20
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"math/rand"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	jetinfer "github.com/jetinfer/jetinfer/clients/go"
)

// sample is one job's inputs and the outputs PyTorch gave for them.
type sample struct {
	inputs, outputs []jetinfer.Tensor
}

// goldenIndex is golden.json: per model, sets of .npy files of N samples each.
type goldenIndex struct {
	Models []struct {
		Name string `json:"name"`
		Sets []struct {
			Inputs  []string `json:"inputs"`
			Outputs []string `json:"outputs"`
		} `json:"sets"`
	} `json:"models"`
}

// loadGolden reads every sample of model, set after set.
func loadGolden(path, model string) ([]sample, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var index goldenIndex
	if err := json.Unmarshal(raw, &index); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	load := func(files []string) ([][]jetinfer.Tensor, error) {
		var arrays [][]jetinfer.Tensor
		for _, f := range files {
			a, err := readNpy(filepath.Join(filepath.Dir(path), f))
			if err != nil {
				return nil, err
			}
			arrays = append(arrays, a)
		}
		return arrays, nil
	}
	var out []sample
	for _, m := range index.Models {
		if m.Name != model {
			continue
		}
		for _, set := range m.Sets {
			ins, err := load(set.Inputs)
			if err != nil {
				return nil, err
			}
			outs, err := load(set.Outputs)
			if err != nil {
				return nil, err
			}
			for i := range ins[0] {
				var s sample
				for _, a := range ins {
					s.inputs = append(s.inputs, a[i])
				}
				for _, a := range outs {
					s.outputs = append(s.outputs, a[i])
				}
				out = append(out, s)
			}
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no samples of model %q", path, model)
	}
	return out, nil
}

// mismatch says why a result differs from the golden outputs ("" when it matches):
// |got - want| <= atol + rtol × |want| per element, looser for half-precision outputs.
func mismatch(r *jetinfer.Result, want []jetinfer.Tensor, atol, rtol float64) string {
	if err := r.Err(); err != nil {
		return err.Error()
	}
	if len(r.Outputs) != len(want) {
		return fmt.Sprintf("%d outputs, want %d", len(r.Outputs), len(want))
	}
	for k, got := range r.Outputs {
		if fmt.Sprint(got.Shape) != fmt.Sprint(want[k].Shape) {
			return fmt.Sprintf("output %d has shape %v, want %v", k, got.Shape, want[k].Shape)
		}
		g, err := got.Float64s()
		if err != nil {
			return err.Error()
		}
		w, _ := want[k].Float64s()
		a, rt := atol, rtol
		if got.DType == jetinfer.F16 || got.DType == jetinfer.BF16 {
			a, rt = 2e-2, 2e-2
		}
		for i := range w {
			if math.IsNaN(g[i]) || math.Abs(g[i]-w[i]) > a+rt*math.Abs(w[i]) {
				return fmt.Sprintf("output %d element %d is %g, want %g", k, i, g[i], w[i])
			}
		}
	}
	return ""
}

type options struct {
	natsURL, redisURL, golden, models, modes, priority string
	inputsRedisURLs                                    string
	count                                              int
	timeout                                            time.Duration
	atol, rtol                                         float64
}

func main() {
	var o options
	flag.StringVar(&o.natsURL, "nats-url", "nats://127.0.0.1:4222", "NATS server")
	flag.StringVar(&o.redisURL, "redis-url", "redis://127.0.0.1:6379", "Redis (redis://, rediss://, unix://, redis+unix://)")
	flag.StringVar(&o.inputsRedisURLs, "inputs-redis-url", os.Getenv("JETINFER_INPUTS_REDIS_URLS"),
		"extra Redis servers for inputs sent by reference (input stores 1, 2, ...), comma-separated; the workers' list")
	flag.StringVar(&o.golden, "golden", "models/out/golden.json", "golden data index")
	flag.StringVar(&o.models, "models", "pair,imgmean", "models to check, comma-separated")
	flag.StringVar(&o.modes, "modes", "inline,ref", "how inputs travel: inline, ref (through Redis) or both")
	flag.StringVar(&o.priority, "priority", "p1", "p0, p1 or p2")
	flag.IntVar(&o.count, "count", 20, "jobs per model and mode")
	flag.DurationVar(&o.timeout, "timeout", 60*time.Second, "how long to wait for all results")
	flag.Float64Var(&o.atol, "atol", 1e-4, "absolute tolerance")
	flag.Float64Var(&o.rtol, "rtol", 1e-3, "relative tolerance")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		os.Exit(1)
	}
	fmt.Println("PASS")
}

func run(o options) error {
	priority, err := jetinfer.ParsePriority(o.priority)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	clients := map[string]*jetinfer.Client{}
	for _, mode := range strings.Split(o.modes, ",") {
		limit := map[string]int{"inline": math.MaxInt, "ref": 0}[mode]
		if mode != "inline" && mode != "ref" {
			return fmt.Errorf("unknown mode %q (inline or ref)", mode)
		}
		c, err := jetinfer.Connect(o.natsURL, o.redisURL,
			jetinfer.WithName("jetinfer-example-go"), jetinfer.WithInlineLimit(limit),
			jetinfer.WithInputsRedisURLs(o.inputsRedisURLs))
		if err != nil {
			return err
		}
		defer c.Close()
		clients[mode] = c
	}
	fmt.Printf("servers: nats %s, redis %s\n", o.natsURL, o.redisURL)

	type pending struct {
		model, mode string
		waiter      *jetinfer.Waiter
		want        []jetinfer.Tensor
	}
	var jobs []pending
	streams := map[string]int{} // jobs stored per stream (partition)
	run := fmt.Sprintf("go-example-%08x", rand.New(rand.NewSource(time.Now().UnixNano())).Uint32())
	for _, model := range strings.Split(o.models, ",") {
		samples, err := loadGolden(o.golden, model)
		if err != nil {
			return err
		}
		for _, mode := range strings.Split(o.modes, ",") {
			c := clients[mode]
			for i := 0; i < o.count; i++ {
				s := samples[i%len(samples)]
				job := &jetinfer.Job{ID: fmt.Sprintf("%s-%s-%s-%d", run, model, mode, i),
					Model: model, Inputs: s.inputs, Meta: map[string]string{"client": "go"}}
				// Subscribe to the completion notice before publishing.
				w, err := c.Watch(job.ID)
				if err != nil {
					return err
				}
				defer w.Close()
				sub, err := c.Submit(ctx, priority, job)
				if err != nil {
					return fmt.Errorf("submitting %s: %w", job.ID, err)
				}
				if sub.ByReference != (mode == "ref") {
					return fmt.Errorf("%s: sent by reference = %v in mode %s", job.ID, sub.ByReference, mode)
				}
				jobs = append(jobs, pending{model, mode, w, s.outputs})
				streams[sub.Stream]++
			}
		}
	}
	names := make([]string, 0, len(streams))
	for name := range streams {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		fmt.Printf("stream %s: %d jobs\n", name, streams[name])
	}
	bad := 0
	counts := map[string]int{}
	for _, j := range jobs {
		r, err := j.waiter.Wait(ctx)
		if err != nil {
			return err
		}
		why := mismatch(r, j.want, o.atol, o.rtol)
		if why == "" && r.Meta["client"] != "go" {
			why = fmt.Sprintf("meta not echoed: %v", r.Meta)
		}
		if why != "" {
			bad++
			if bad <= 5 {
				fmt.Printf("MISMATCH %s: %s\n", r.ID, why)
			}
			continue
		}
		counts[j.model+" "+j.mode]++
	}
	for _, model := range strings.Split(o.models, ",") {
		for _, mode := range strings.Split(o.modes, ",") {
			fmt.Printf("%-10s %-7s %d/%d ok\n", model, mode, counts[model+" "+mode], o.count)
		}
	}
	if bad > 0 {
		return fmt.Errorf("%d of %d results differ from the golden outputs", bad, len(jobs))
	}
	return nil
}
