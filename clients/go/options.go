package jetinfer

// The options of Connect and New, and their defaults.

import (
	"log"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

const (
	// DefaultInlineLimit: jobs whose input data totals at least this many bytes send
	// their inputs by reference through Redis (section 10), as the Rust client does.
	DefaultInlineLimit = 32 << 10
	// DefaultInputsTTL: how long inputs sent by reference stay in Redis when the job
	// names no deadline (the worker deletes them once the result is stored).
	DefaultInputsTTL = time.Hour
	// DefaultKeyPrefix of the Redis keys (jetinfer:result:<id>, jetinfer:input:<id>).
	DefaultKeyPrefix = "jetinfer"
	// DefaultPublishTimeout bounds waiting for JetStream's ack when the context has no
	// deadline.
	DefaultPublishTimeout = 10 * time.Second

	// inputsTTLMargin is kept beyond a job's deadline, for the clocks of producer and
	// dispatcher to differ.
	inputsTTLMargin = time.Minute
	// pollFirst is the first pause between two reads of a missing result; it doubles up
	// to pollMax.
	pollFirst = 20 * time.Millisecond
	pollMax   = 500 * time.Millisecond
)

// Option configures Connect and New.
type Option func(*config)

type config struct {
	name           string
	natsOptions    []nats.Option
	inlineLimit    int
	inputsTTL      time.Duration
	keyPrefix      string
	publishTimeout time.Duration
	redisMaxIdle   int
	// inputsRedisURLs are input stores 1, 2, ... (store 0 is the result store).
	inputsRedisURLs []string
	// partitions > 0 fixes every priority's partition count (0: read from JetStream).
	partitions int
	logf       func(format string, args ...interface{})
	// pollFirst, doubling up to pollMax: the pauses between reads of a missing result.
	pollFirst, pollMax time.Duration
}

// WithName names the NATS connection (seen in the server's monitoring).
func WithName(name string) Option { return func(c *config) { c.name = name } }

// WithNATSOptions passes options to nats.Connect (credentials, TLS, reconnects).
func WithNATSOptions(opts ...nats.Option) Option {
	return func(c *config) { c.natsOptions = append(c.natsOptions, opts...) }
}

// WithInlineLimit: jobs whose input data totals at least bytes keep their inputs in
// Redis and carry a reference; 0 sends every job by reference, math.MaxInt none.
func WithInlineLimit(bytes int) Option { return func(c *config) { c.inlineLimit = bytes } }

// WithInputsTTL: how long inputs sent by reference stay in Redis when a job has no
// deadline; with a deadline, until a minute after it.
func WithInputsTTL(ttl time.Duration) Option { return func(c *config) { c.inputsTTL = ttl } }

// WithKeyPrefix changes the Redis key prefix, for deployments that changed theirs.
func WithKeyPrefix(prefix string) Option { return func(c *config) { c.keyPrefix = prefix } }

// WithPublishTimeout bounds the wait for a publish ack when the context has no deadline.
func WithPublishTimeout(d time.Duration) Option {
	return func(c *config) { c.publishTimeout = d }
}

// WithInputsRedisURLs adds Redis servers for inputs sent by reference: input stores 1,
// 2, ... in the order given (store 0 is the result store). Each argument may hold several
// comma-separated URLs. Give the same list, in the same order, as the workers'
// --inputs-redis-url. The client opens these pools itself, and Close closes them.
func WithInputsRedisURLs(urls ...string) Option {
	return func(c *config) {
		for _, arg := range urls {
			for _, u := range strings.Split(arg, ",") {
				if u = strings.TrimSpace(u); u != "" {
					c.inputsRedisURLs = append(c.inputsRedisURLs, u)
				}
			}
		}
	}
}

// WithPartitions fixes every priority's partition count at n (1..MaxPartitions)
// instead of reading the one the dispatcher publishes. n must not exceed the
// dispatcher's --partitions: a partition without a stream refuses its jobs (ErrNoStream).
func WithPartitions(n int) Option { return func(c *config) { c.partitions = n } }

// WithLogf sets where the client's rare warnings go (default log.Printf), e.g. that a
// partition count could not be read.
func WithLogf(logf func(format string, args ...interface{})) Option {
	return func(c *config) { c.logf = logf }
}

func newConfig(opts []Option) config {
	cfg := config{
		inlineLimit:    DefaultInlineLimit,
		inputsTTL:      DefaultInputsTTL,
		keyPrefix:      DefaultKeyPrefix,
		publishTimeout: DefaultPublishTimeout,
		redisMaxIdle:   8,
		pollFirst:      pollFirst,
		pollMax:        pollMax,
		logf:           log.Printf,
	}
	for _, o := range opts {
		o(&cfg)
	}
	return cfg
}
