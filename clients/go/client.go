package jetinfer

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/gomodule/redigo/redis"
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

// Client publishes jobs to JetStream and reads their results from Redis. It is safe
// for concurrent use.
type Client struct {
	nc   *nats.Conn
	js   nats.JetStreamContext
	pool *redis.Pool
	cfg  config
	// owned: Close closes the connections (they were opened by Connect).
	owned bool
}

// Submitted is JetStream's acknowledgement of one job.
type Submitted struct {
	ID string
	// Duplicate: JetStream already held a job with this id (nothing new was queued).
	Duplicate bool
	// Stream and Sequence say where the job is stored.
	Stream   string
	Sequence uint64
	// ByReference: the inputs went through Redis (section 10).
	ByReference bool
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
	}
	for _, o := range opts {
		o(&cfg)
	}
	return cfg
}

// Connect opens a NATS connection and a Redis pool (redis://, rediss://, unix:// or
// redis+unix:// URL); Close closes both.
func Connect(natsURL, redisURL string, opts ...Option) (*Client, error) {
	cfg := newConfig(opts)
	pool, err := newRedisPool(redisURL, cfg.redisMaxIdle)
	if err != nil {
		return nil, err
	}
	natsOpts := cfg.natsOptions
	if cfg.name != "" {
		natsOpts = append([]nats.Option{nats.Name(cfg.name)}, natsOpts...)
	}
	nc, err := nats.Connect(natsURL, natsOpts...)
	if err != nil {
		pool.Close()
		return nil, err
	}
	c, err := New(nc, pool, opts...)
	if err != nil {
		nc.Close()
		pool.Close()
		return nil, err
	}
	c.owned = true
	return c, nil
}

// New builds a client over a NATS connection and a Redis pool the caller owns (Close
// leaves them open).
func New(nc *nats.Conn, pool *redis.Pool, opts ...Option) (*Client, error) {
	js, err := nc.JetStream()
	if err != nil {
		return nil, err
	}
	return &Client{nc: nc, js: js, pool: pool, cfg: newConfig(opts)}, nil
}

// Close closes the connections Connect opened.
func (c *Client) Close() {
	if c.owned {
		c.nc.Close()
		c.pool.Close()
	}
}

// NATS is the client's NATS connection.
func (c *Client) NATS() *nats.Conn { return c.nc }

// Redis is the client's Redis pool.
func (c *Client) Redis() *redis.Pool { return c.pool }

// ResultKey is the Redis key of a job's result.
func (c *Client) ResultKey(id string) string { return c.cfg.keyPrefix + ":result:" + id }

// InputKey is the Redis key of a job's inputs sent by reference.
func (c *Client) InputKey(id string) string { return c.cfg.keyPrefix + ":input:" + id }

// Submit validates the job and publishes it on jetinfer.jobs.<priority>.<model> with
// Nats-Msg-Id: <id>, waiting for JetStream's ack. Inputs of at least the inline limit
// are first stored in Redis (SET PX) and the job carries a reference. Errors:
// *InvalidJobError (nothing sent), *StoreError (inputs not stored, nothing published),
// *RejectedError (ErrStreamFull, ErrNoStream, or another refusal; the job is not
// submitted and may be published again with the same id).
func (c *Client) Submit(ctx context.Context, p Priority, job *Job) (*Submitted, error) {
	if p != P0 && p != P1 && p != P2 {
		return nil, invalidInput("priority %q is not p0, p1 or p2 (see ParsePriority)", string(p))
	}
	if err := job.Validate(); err != nil {
		return nil, err
	}
	var ref *InputsRef
	if job.dataBytes() >= c.cfg.inlineLimit {
		var err error
		if ref, err = c.storeInputs(ctx, job); err != nil {
			return nil, err
		}
	}
	payload, err := EncodeJob(job, ref)
	if err != nil {
		return nil, err
	}
	if len(payload) > MaxPayloadBytes {
		return nil, badPayload("the job message is %d bytes, at most %d (send the inputs by reference)",
			len(payload), MaxPayloadBytes)
	}
	ack, err := c.Publish(ctx, p.Subject(job.Model), job.ID, payload)
	if err != nil {
		return nil, err
	}
	return &Submitted{ID: job.ID, Duplicate: ack.Duplicate, Stream: ack.Stream,
		Sequence: ack.Sequence, ByReference: ref != nil}, nil
}

// storeInputs writes the job's inputs to jetinfer:input:<id> and returns their reference.
func (c *Client) storeInputs(ctx context.Context, job *Job) (*InputsRef, error) {
	value := EncodeInputs(job.Inputs)
	if len(value) > MaxPayloadBytes {
		return nil, invalidInput("inputs by reference are %d bytes, at most %d", len(value), MaxPayloadBytes)
	}
	ttl := c.cfg.inputsTTL
	if !job.Deadline.IsZero() {
		ttl = time.Until(job.Deadline) + inputsTTLMargin
		if ttl < inputsTTLMargin {
			ttl = inputsTTLMargin
		}
	}
	key := c.InputKey(job.ID)
	conn, err := c.pool.GetContext(ctx)
	if err != nil {
		return nil, &StoreError{Op: "SET " + key, Err: err}
	}
	defer conn.Close()
	if _, err := redis.String(conn.Do("SET", key, value, "PX", ttl.Milliseconds())); err != nil {
		return nil, &StoreError{Op: "SET " + key, Err: err}
	}
	return &InputsRef{Bytes: uint64(len(value)), Digest: InputsDigest(job.Inputs)}, nil
}

// Publish sends an encoded job message through JetStream with Nats-Msg-Id: msgID and
// waits for the ack. Submit uses it; it is exported for tools and tests that publish
// raw bytes. A refusal is a *RejectedError.
func (c *Client) Publish(ctx context.Context, subject, msgID string, payload []byte) (*nats.PubAck, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.cfg.publishTimeout)
		defer cancel()
	}
	msg := nats.NewMsg(subject)
	if msgID != "" {
		msg.Header.Set(nats.MsgIdHdr, msgID)
	}
	msg.Data = payload
	ack, err := c.js.PublishMsg(msg, nats.Context(ctx))
	if err != nil {
		return nil, &RejectedError{Subject: subject, Reason: rejectReason(err), Err: err}
	}
	return ack, nil
}

// rejectReason tells a full stream and a missing stream from other refusals.
func rejectReason(err error) RejectReason {
	if errors.Is(err, nats.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders) {
		return RejectNoStream
	}
	var api *nats.APIError
	if errors.As(err, &api) {
		// The server answers a stream at its limits with "maximum messages exceeded",
		// "maximum bytes exceeded" or "maximum messages per subject exceeded".
		if strings.Contains(api.Description, "maximum messages") ||
			strings.Contains(api.Description, "maximum bytes") {
			return RejectStreamFull
		}
		if api.ErrorCode == nats.JSErrCodeStreamNotFound {
			return RejectNoStream
		}
	}
	return RejectOther
}

// Get reads a job's result; nil (and no error) while the job is not finished. A result
// of status error or expired is returned as is: see Result.Err.
func (c *Client) Get(ctx context.Context, id string) (*Result, error) {
	key := c.ResultKey(id)
	conn, err := c.pool.GetContext(ctx)
	if err != nil {
		return nil, &StoreError{Op: "GET " + key, Err: err}
	}
	defer conn.Close()
	raw, err := redis.Bytes(conn.Do("GET", key))
	if err == redis.ErrNil {
		return nil, nil
	}
	if err != nil {
		return nil, &StoreError{Op: "GET " + key, Err: err}
	}
	return DecodeResult(raw)
}

// Waiter waits for one job's result; made by Watch before the job is published so
// its completion notice cannot be missed.
type Waiter struct {
	c       *Client
	id      string
	sub     *nats.Subscription
	notices chan *nats.Msg
}

// Watch subscribes to the job's completion notice (core NATS jetinfer.done.<id>). Call
// it before Submit, then Waiter.Wait; Close it when done. When NATS refuses the
// subscription, the waiter still polls Redis.
func (c *Client) Watch(id string) (*Waiter, error) {
	if err := ValidateJobID(id); err != nil {
		return nil, err
	}
	w := &Waiter{c: c, id: id, notices: make(chan *nats.Msg, 4)}
	if sub, err := c.nc.ChanSubscribe("jetinfer.done."+id, w.notices); err == nil {
		w.sub = sub
	}
	return w, nil
}

// Close ends the subscription.
func (w *Waiter) Close() {
	if w.sub != nil {
		_ = w.sub.Unsubscribe()
		w.sub = nil
	}
}

// Wait returns the job's result once it is in Redis: it reads it, then sleeps until the
// completion notice arrives or the next poll is due (20 ms doubling to 500 ms: a notice
// can be missed, it is not stored). When ctx ends first it fails with *TimeoutError.
func (w *Waiter) Wait(ctx context.Context) (*Result, error) {
	every, most := w.c.cfg.pollFirst, w.c.cfg.pollMax
	timer := time.NewTimer(every)
	defer timer.Stop()
	for {
		r, err := w.c.Get(ctx, w.id)
		if r != nil || err != nil {
			if err != nil && ctx.Err() != nil {
				return nil, &TimeoutError{ID: w.id, Err: ctx.Err()}
			}
			return r, err
		}
		select {
		case <-ctx.Done():
			return nil, &TimeoutError{ID: w.id, Err: ctx.Err()}
		case <-w.notices:
		case <-timer.C:
			every *= 2
			if every > most {
				every = most
			}
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(every)
	}
}

// Wait waits for the result of a job that is already published (see Watch to subscribe
// before publishing). The context bounds the wait.
func (c *Client) Wait(ctx context.Context, id string) (*Result, error) {
	w, err := c.Watch(id)
	if err != nil {
		return nil, err
	}
	defer w.Close()
	return w.Wait(ctx)
}

// SubmitAndWait subscribes to the job's notice, submits it and waits for its result.
// The result may have status error or expired: check Result.Err.
func (c *Client) SubmitAndWait(ctx context.Context, p Priority, job *Job) (*Result, error) {
	w, err := c.Watch(job.ID)
	if err != nil {
		return nil, err
	}
	defer w.Close()
	if _, err := c.Submit(ctx, p, job); err != nil {
		return nil, err
	}
	r, err := w.Wait(ctx)
	if err != nil {
		return nil, err
	}
	// Inside JetStream's duplicate window a reused id is dropped as a duplicate, and the
	// stored result is the first job's: never return it as this job's own.
	if !r.Answers(job.Model, InputsDigest(job.Inputs)) {
		return nil, &IdConflictError{ID: job.ID, Result: r}
	}
	return r, nil
}
