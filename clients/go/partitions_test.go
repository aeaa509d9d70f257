package jetinfer

// Partition and input-store choice against the vectors of docs/wire-format.md (sections
// 2.1 and 10, read from the document), the names, the count from stream metadata, and
// example 9.6 byte for byte. No servers needed.

import (
	"bytes"
	"os"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// documentedPartitions reads section 2.1's example: N, the ids and their partitions.
func documentedPartitions(t *testing.T) (int, []string, []int) {
	t.Helper()
	doc, err := os.ReadFile(wireDoc())
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("with N = (\\d+),\\s+ids `(\\S+?)(\\d+)` …\\s+`\\S+?(\\d+)`\\s+go\\s+to\\s+partitions\\s+([\\d,\\s]+\\d)").FindSubmatch(doc)
	if m == nil {
		t.Fatal("section 2.1's partition example not found")
	}
	n, _ := strconv.Atoi(string(m[1]))
	first, _ := strconv.Atoi(string(m[3]))
	last, _ := strconv.Atoi(string(m[4]))
	var ids []string
	for i := first; i <= last; i++ {
		ids = append(ids, string(m[2])+strconv.Itoa(i))
	}
	var parts []int
	for _, f := range strings.Fields(strings.ReplaceAll(string(m[5]), ",", " ")) {
		k, _ := strconv.Atoi(f)
		parts = append(parts, k)
	}
	return n, ids, parts
}

func TestPartitionChoiceMatchesSection21(t *testing.T) {
	doc, err := os.ReadFile(wireDoc())
	if err != nil {
		t.Fatal(err)
	}
	vectors := regexp.MustCompile("FNV-1a-32 of `\"a\"` is `0x([0-9a-f]+)`|id `a` hashes to `0x([0-9a-f]+)`").FindAllSubmatch(doc, -1)
	if len(vectors) < 2 {
		t.Fatalf("the FNV-1a-32 vectors of sections 2.1 and 10 not found (%d)", len(vectors))
	}
	for _, m := range vectors {
		want, _ := strconv.ParseUint(string(m[1])+string(m[2]), 16, 32)
		if got := FNV1a32([]byte("a")); uint64(got) != want {
			t.Fatalf("FNV1a32(a) = %#x, the document says %#x", got, want)
		}
	}
	if FNV1a32([]byte("a")) != 0xe40c292c || FNV1a32(nil) != 0x811c9dc5 {
		t.Fatalf("FNV1a32: %#x %#x", FNV1a32([]byte("a")), FNV1a32(nil))
	}
	n, ids, want := documentedPartitions(t)
	var got []int
	for _, id := range ids {
		got = append(got, PartitionFor(id, n))
	}
	if !reflect.DeepEqual(got, want) || n != 3 || !reflect.DeepEqual(want, []int{2, 0, 1, 0, 1, 2, 0, 2}) {
		t.Fatalf("N=%d ids %v: partitions %v, the document says %v", n, ids, got, want)
	}
	if PartitionFor("a", 4) != int(0xe40c292c%4) {
		t.Fatalf("PartitionFor(a, 4) = %d", PartitionFor("a", 4))
	}
	counts := make([]int, 4)
	for i := 0; i < 4000; i++ {
		id := "job-" + strconv.Itoa(i)
		if PartitionFor(id, 1) != 0 || PartitionFor(id, 0) != 0 || InputStoreFor(id, 3) != PartitionFor(id, 3) {
			t.Fatalf("%s: one partition is partition 0; stores hash as partitions", id)
		}
		counts[PartitionFor(id, 4)]++
	}
	for _, c := range counts {
		if c < 800 || c > 1200 {
			t.Fatalf("uneven spread over 4 partitions: %v", counts)
		}
	}
}

func TestPartitionNamesAndMetadata(t *testing.T) {
	for _, c := range [][2]string{
		{PartitionStream(P1, 0), "JETINFER_P1"},
		{PartitionStream(P2, 3), "JETINFER_P2_3"},
		{P1.PartitionSubject("mlp", 0), "jetinfer.jobs.p1.mlp"},
		{P2.PartitionSubject("mlp", 3), "jetinfer.jobs.p2.mlp.3"},
	} {
		if c[0] != c[1] {
			t.Errorf("got %s, want %s", c[0], c[1])
		}
	}
	for _, c := range []struct {
		value   string
		present bool
		want    int
	}{{"", false, 1}, {"4", true, 4}, {" 2 ", true, 2}, {"0", true, 1}, {"9", true, 1}, {"x", true, 1}, {"", true, 1}} {
		if got := PartitionsFromMetadata(c.value, c.present); got != c.want {
			t.Errorf("PartitionsFromMetadata(%q, %v) = %d, want %d", c.value, c.present, got, c.want)
		}
	}
	if _, err := New(nil, nil, WithPartitions(9)); err == nil {
		t.Error("WithPartitions(9) accepted")
	}
}

func TestJobInInputStore1EncodesAsExample96(t *testing.T) {
	ex := docExamples(t)
	value := EncodeInputs(docInputs())
	ref := &InputsRef{Bytes: uint64(len(value)), Digest: InputsDigest(docInputs()), Store: 1}
	got, err := EncodeJob(&Job{ID: "j2", Model: "mlp", Inputs: docInputs()}, ref)
	if err != nil {
		t.Fatal(err)
	}
	if len(ex["9.6"]) == 0 || !bytes.Equal(got, ex["9.6"]) {
		t.Fatalf("job in input store 1\n got %x\nwant %x", got, ex["9.6"])
	}
	ref.Store = 0
	if got, _ := EncodeJob(&Job{ID: "j2", Model: "mlp", Inputs: docInputs()}, ref); !bytes.Equal(got, ex["9.4"]) {
		t.Fatalf("store 0 is left out: got %x", got)
	}
}
