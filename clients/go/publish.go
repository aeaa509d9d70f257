package jetinfer

// Publishing a job to its partition stream: each priority's partition count read from
// the metadata of its partition-0 stream (docs/wire-format.md section 2.1), and read again
// when a publish finds no stream.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
)

// streamInfoReply is what this package reads of a JetStream stream info answer.
type streamInfoReply struct {
	Config struct {
		Metadata map[string]string `json:"metadata"`
	} `json:"config"`
	Error *struct {
		Code        int    `json:"code"`
		ErrCode     int    `json:"err_code"`
		Description string `json:"description"`
	} `json:"error"`
}

// readPartitions asks JetStream for p's partition-0 stream (a raw API request: the
// metadata field is newer than the nats.go this package builds with). keep: whether
// the answer may be kept; warning: why it could not be read, when that is worth saying
// once (a stream not made yet is not: its publish fails and the next one reads again).
func (c *Client) readPartitions(ctx context.Context, p Priority) (n int, keep bool, warning string) {
	name := PartitionStream(p, 0)
	rctx, cancel := context.WithTimeout(ctx, c.cfg.publishTimeout)
	defer cancel()
	msg, err := c.nc.RequestWithContext(rctx, "$JS.API.STREAM.INFO."+name, nil)
	if err != nil {
		if ctx.Err() != nil {
			return 1, false, "" // the caller gave up: read again next time
		}
		return 1, true, fmt.Sprintf("cannot read the partition count of %s (%v)", name, err)
	}
	var reply streamInfoReply
	if err := json.Unmarshal(msg.Data, &reply); err != nil {
		return 1, true, fmt.Sprintf("cannot read the partition count of %s (%v)", name, err)
	}
	if reply.Error != nil {
		if reply.Error.Code == 404 || reply.Error.ErrCode == int(nats.JSErrCodeStreamNotFound) {
			return 1, true, ""
		}
		return 1, true, fmt.Sprintf("cannot read the partition count of %s (%s, code %d)",
			name, reply.Error.Description, reply.Error.Code)
	}
	value, present := reply.Config.Metadata[PartitionsMetadataKey]
	return PartitionsFromMetadata(value, present), true, ""
}

// Partitions is p's partition count as this client uses it: WithPartitions' count, or
// the one read from JetStream (on the first call, or the first publish of p).
func (c *Client) Partitions(ctx context.Context, p Priority) int {
	return c.partitions.count(ctx, p, c.readPartitions, c.cfg.logf)
}

// JobSubject is the subject Submit publishes job id of model on at priority p (its
// partition's), for tools that publish with Publish.
func (c *Client) JobSubject(ctx context.Context, p Priority, model, id string) string {
	return p.PartitionSubject(model, PartitionFor(id, c.Partitions(ctx, p)))
}

// publishJob publishes to the job's partition of p. When no stream takes the subject,
// the count is read again (the dispatcher may run with fewer partitions now, or was not
// running yet) and a job of partition k >= 1 is published once more.
func (c *Client) publishJob(ctx context.Context, p Priority, model, id string, payload []byte) (*nats.PubAck, error) {
	k := PartitionFor(id, c.Partitions(ctx, p))
	ack, err := c.Publish(ctx, p.PartitionSubject(model, k), id, payload)
	if err == nil || !errors.Is(err, ErrNoStream) || !c.partitions.forget(p) || k == 0 {
		return ack, err
	}
	k = PartitionFor(id, c.Partitions(ctx, p))
	return c.Publish(ctx, p.PartitionSubject(model, k), id, payload)
}
