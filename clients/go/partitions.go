package jetinfer

// Partition streams (docs/wire-format.md section 2.1) and input stores (section 10): how
// a job id chooses its stream and its Redis, and the keeping of each priority's partition
// count (publish.go reads it from JetStream).

import (
	"context"
	"strconv"
	"strings"
	"sync"
)

const (
	// MaxPartitions is the most partition streams a priority has (the dispatcher's
	// --partitions).
	MaxPartitions = 8
	// PartitionsMetadataKey is the metadata key of a priority's partition-0 stream that
	// holds its partition count, a decimal string; absent means 1.
	PartitionsMetadataKey = "jetinfer.partitions"
)

// FNV1a32 is FNV-1a, 32 bit, the hash that spreads jobs over partitions and input
// stores; FNV1a32([]byte("a")) is 0xe40c292c.
func FNV1a32(data []byte) uint32 {
	h := uint32(0x811c9dc5)
	for _, b := range data {
		h ^= uint32(b)
		h *= 0x01000193
	}
	return h
}

// PartitionFor is the partition stream of job id when its priority has n of them. The
// same id always lands in the same stream, so JetStream's de-duplication holds.
func PartitionFor(id string, n int) int {
	if n <= 1 {
		return 0
	}
	return int(FNV1a32([]byte(id)) % uint32(n))
}

// InputStoreFor is the input store of job id's inputs sent by reference, out of n
// stores (store 0 is the result store).
func InputStoreFor(id string, n int) int { return PartitionFor(id, n) }

// PartitionStream is the stream of partition k of p: JETINFER_P1, JETINFER_P1_<k>.
func PartitionStream(p Priority, k int) string {
	name := "JETINFER_" + strings.ToUpper(string(p))
	if k == 0 {
		return name
	}
	return name + "_" + strconv.Itoa(k)
}

// PartitionSubject is where a job of model is published in partition k of p:
// p.Subject(model), followed by .<k> for k >= 1.
func (p Priority) PartitionSubject(model string, k int) string {
	if k == 0 {
		return p.Subject(model)
	}
	return p.Subject(model) + "." + strconv.Itoa(k)
}

// PartitionsFromMetadata reads the count from a partition-0 stream's metadata value;
// absent, unreadable or out of range counts as 1 (partition 0 always exists).
func PartitionsFromMetadata(value string, present bool) int {
	n, err := strconv.Atoi(strings.TrimSpace(value))
	if !present || err != nil || n < 1 || n > MaxPartitions {
		return 1
	}
	return n
}

// rank is the priority's slot in per-priority arrays.
func (p Priority) rank() int {
	switch p {
	case P0:
		return 0
	case P1:
		return 1
	}
	return 2
}

// partitionCounts keeps each priority's count for one client: read on the priority's
// first publish, read again after a publish found no stream.
type partitionCounts struct {
	// fixed > 0: every priority has that many partitions; never read.
	fixed int
	// lookups serializes each priority's lookup, so concurrent first publishes share one.
	lookups [3]sync.Mutex
	mu      sync.Mutex
	known   [3]int // 0: not read yet
	warned  [3]bool
}

// partitionsReader reads p's count from JetStream; keep: whether the answer may be
// kept; warning: why it could not be read, when that is worth saying once.
type partitionsReader func(ctx context.Context, p Priority) (n int, keep bool, warning string)

// count is p's partition count, read if not known; a warning goes to logf once per
// priority.
func (pc *partitionCounts) count(ctx context.Context, p Priority, read partitionsReader,
	logf func(format string, args ...interface{})) int {
	if pc.fixed > 0 {
		return pc.fixed
	}
	r := p.rank()
	pc.lookups[r].Lock()
	defer pc.lookups[r].Unlock()
	pc.mu.Lock()
	n := pc.known[r]
	pc.mu.Unlock()
	if n != 0 {
		return n
	}
	n, keep, warning := read(ctx, p)
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if keep {
		pc.known[r] = n
	}
	if warning != "" && !pc.warned[r] && logf != nil {
		pc.warned[r] = true
		logf("jetinfer: %s; publishing %s jobs to partition 0 only", warning, p)
	}
	return n
}

// forget drops p's count so the next publish reads it again; false when it is fixed.
func (pc *partitionCounts) forget(p Priority) bool {
	if pc.fixed > 0 {
		return false
	}
	pc.mu.Lock()
	pc.known[p.rank()] = 0
	pc.mu.Unlock()
	return true
}
