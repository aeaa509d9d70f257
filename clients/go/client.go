package jetinfer

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/nats-io/nats.go"
)

// Client publishes jobs to JetStream and reads their results from Redis. It is safe
// for concurrent use.
type Client struct {
	nc   *nats.Conn
	js   nats.JetStreamContext
	pool *redis.Pool
	// stores are where inputs sent by reference go: pool, then the input stores of
	// WithInputsRedisURLs (which the client opened, so Close closes them).
	stores     []*redis.Pool
	cfg        config
	partitions *partitionCounts
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
	cfg := newConfig(opts)
	if cfg.partitions < 0 || cfg.partitions > MaxPartitions {
		return nil, fmt.Errorf("jetinfer: WithPartitions(%d): the count is 1..%d", cfg.partitions, MaxPartitions)
	}
	js, err := nc.JetStream()
	if err != nil {
		return nil, err
	}
	c := &Client{nc: nc, js: js, pool: pool, stores: []*redis.Pool{pool}, cfg: cfg,
		partitions: &partitionCounts{fixed: cfg.partitions}}
	for _, u := range cfg.inputsRedisURLs {
		store, err := newRedisPool(u, cfg.redisMaxIdle)
		if err != nil {
			c.closeInputStores()
			return nil, fmt.Errorf("input store %d: %w", len(c.stores), err)
		}
		c.stores = append(c.stores, store)
	}
	return c, nil
}

// Close closes the connections Connect opened, and the input stores of
// WithInputsRedisURLs.
func (c *Client) Close() {
	c.closeInputStores()
	if c.owned {
		c.nc.Close()
		c.pool.Close()
	}
}

func (c *Client) closeInputStores() {
	for _, store := range c.stores[1:] {
		store.Close()
	}
	c.stores = c.stores[:1]
}

// NATS is the client's NATS connection.
func (c *Client) NATS() *nats.Conn { return c.nc }

// Redis is the client's Redis pool.
func (c *Client) Redis() *redis.Pool { return c.pool }

// InputStores are the Redis pools of inputs sent by reference, by store index: Redis()
// first, then those of WithInputsRedisURLs.
func (c *Client) InputStores() []*redis.Pool { return c.stores }

// ResultKey is the Redis key of a job's result.
func (c *Client) ResultKey(id string) string { return c.cfg.keyPrefix + ":result:" + id }

// InputKey is the Redis key of a job's inputs sent by reference.
func (c *Client) InputKey(id string) string { return c.cfg.keyPrefix + ":input:" + id }

// Submit validates the job and publishes it on jetinfer.jobs.<priority>.<model>
// (followed by .<k> in partition k >= 1, chosen from the id) with Nats-Msg-Id: <id>,
// waiting for JetStream's ack. Inputs of at least the inline limit are first stored in
// Redis (SET PX; in the id's input store) and the job carries a reference. Errors:
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
	ack, err := c.publishJob(ctx, p, job.Model, job.ID, payload)
	if err != nil {
		return nil, err
	}
	return &Submitted{ID: job.ID, Duplicate: ack.Duplicate, Stream: ack.Stream,
		Sequence: ack.Sequence, ByReference: ref != nil}, nil
}

// storeInputs writes the job's inputs to jetinfer:input:<id> in the id's input store and
// returns their reference.
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
	store := InputStoreFor(job.ID, len(c.stores))
	op := fmt.Sprintf("SET %s (input store %d)", key, store)
	conn, err := c.stores[store].GetContext(ctx)
	if err != nil {
		return nil, &StoreError{Op: op, Err: err}
	}
	defer conn.Close()
	if _, err := redis.String(conn.Do("SET", key, value, "PX", ttl.Milliseconds())); err != nil {
		return nil, &StoreError{Op: op, Err: err}
	}
	return &InputsRef{Bytes: uint64(len(value)), Digest: InputsDigest(job.Inputs), Store: uint16(store)}, nil
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
