package jetinfer

// The hex examples of docs/wire-format.md section 9 and the digest vector of section 8,
// read from the document itself so that a change there is caught here.

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"lukechampine.com/blake3"
)

// wireDoc is the path of docs/wire-format.md (JETINFER_WIRE_DOC overrides it).
func wireDoc() string {
	if p := os.Getenv("JETINFER_WIRE_DOC"); p != "" {
		return p
	}
	return "../../docs/wire-format.md"
}

// docExamples maps "9.1" etc. to the bytes of that example's code block: per line,
// what precedes '#', hex tokens concatenated.
func docExamples(t *testing.T) map[string][]byte {
	t.Helper()
	f, err := os.Open(wireDoc())
	if err != nil {
		t.Fatalf("the wire doc: %v", err)
	}
	defer f.Close()
	heading := regexp.MustCompile(`^### (9\.\d+) `)
	hexToken := regexp.MustCompile(`^[0-9a-f]+$`)
	out := map[string][]byte{}
	section, inBlock := "", false
	var cur strings.Builder
	s := bufio.NewScanner(f)
	for s.Scan() {
		line := s.Text()
		if m := heading.FindStringSubmatch(line); m != nil {
			section = m[1]
			continue
		}
		if strings.HasPrefix(line, "```") {
			if inBlock && section != "" {
				b, err := hex.DecodeString(cur.String())
				if err != nil {
					t.Fatalf("example %s: %v", section, err)
				}
				out[section] = b
				section = ""
			}
			inBlock = !inBlock
			cur.Reset()
			continue
		}
		if !inBlock || section == "" {
			continue
		}
		if i := strings.Index(line, "#"); i >= 0 {
			line = line[:i]
		}
		for _, tok := range strings.Fields(line) {
			if !hexToken.MatchString(tok) {
				t.Fatalf("example %s: %q is not hex", section, tok)
			}
			cur.WriteString(tok)
		}
	}
	for _, want := range []string{"9.1", "9.2", "9.3", "9.4", "9.5"} {
		if len(out[want]) == 0 {
			t.Fatalf("example %s not found in %s", want, wireDoc())
		}
	}
	return out
}

// digestVector reads section 8's test vector: the hashed bytes and the digest.
func digestVector(t *testing.T) (hashed []byte, digest string) {
	t.Helper()
	doc, err := os.ReadFile(wireDoc())
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?s)hashed bytes:(.*?)\n\s*digest:\s*([0-9a-f]{64})`).FindSubmatch(doc)
	if m == nil {
		t.Fatal("section 8's digest test vector not found")
	}
	hashed, err = hex.DecodeString(strings.Join(strings.Fields(string(m[1])), ""))
	if err != nil {
		t.Fatal(err)
	}
	return hashed, string(m[2])
}

// docInputs are the inputs of the 9.1 job: one f32 tensor [2] = (1.0, 2.0).
func docInputs() []Tensor { return []Tensor{F32Tensor([]int64{2}, []float32{1, 2})} }

func TestJobEncodesAsExample91(t *testing.T) {
	want := docExamples(t)["9.1"]
	got, err := EncodeJob(&Job{ID: "j1", Model: "mlp", Inputs: docInputs()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("job bytes\n got %x\nwant %x", got, want)
	}
}

func TestErrorResultDecodesAsExample92(t *testing.T) {
	r, err := DecodeResult(docExamples(t)["9.2"])
	if err != nil {
		t.Fatal(err)
	}
	want := &Result{ID: "j", Status: StatusError, Model: "m", Meta: map[string]string{},
		Error: &ErrorBody{Code: CodeBadPayload, Message: "x"}}
	if !reflect.DeepEqual(r, want) {
		t.Fatalf("got %+v\nwant %+v", r, want)
	}
	var re *ResultError
	if e := r.Err(); e == nil || !asResultError(e, &re) || re.Code != CodeBadPayload || re.Status != StatusError {
		t.Fatalf("Err() = %v", r.Err())
	}
}

func asResultError(err error, target **ResultError) bool {
	re, ok := err.(*ResultError)
	*target = re
	return ok
}

func TestOkResultDecodesAsExample93(t *testing.T) {
	r, err := DecodeResult(docExamples(t)["9.3"])
	if err != nil {
		t.Fatal(err)
	}
	want := &Result{
		ID: "j1", Status: StatusOK, Model: "mlp", Version: "1",
		Outputs: []Tensor{F32Tensor([]int64{4}, []float32{0.5, -1, 2, 0})},
		Meta:    map[string]string{}, Worker: "w-1", Attempts: 1,
		Timings:       Timings{QueuedMs: 1.5, BatchSize: 4, ComputeMs: 0.25, TotalMs: 2},
		CompletedAtMs: 1700000000000,
	}
	if !reflect.DeepEqual(r, want) {
		t.Fatalf("got %+v\nwant %+v", r, want)
	}
	if r.Err() != nil {
		t.Fatalf("an ok result has no error: %v", r.Err())
	}
	vals, err := r.Outputs[0].Float32s()
	if err != nil || !reflect.DeepEqual(vals, []float32{0.5, -1, 2, 0}) {
		t.Fatalf("outputs %v %v", vals, err)
	}
}

func TestJobByReferenceEncodesAsExamples94And95(t *testing.T) {
	ex := docExamples(t)
	value := EncodeInputs(docInputs())
	if !bytes.Equal(value, ex["9.5"]) {
		t.Fatalf("stored inputs\n got %x\nwant %x", value, ex["9.5"])
	}
	back, err := DecodeInputs(value)
	if err != nil || !reflect.DeepEqual(back, docInputs()) {
		t.Fatalf("stored inputs read back as %+v, %v", back, err)
	}
	ref := &InputsRef{Bytes: uint64(len(value)), Digest: InputsDigest(docInputs())}
	got, err := EncodeJob(&Job{ID: "j2", Model: "mlp", Inputs: docInputs()}, ref)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, ex["9.4"]) {
		t.Fatalf("job by reference\n got %x\nwant %x", got, ex["9.4"])
	}
}

func TestInputsDigestMatchesSection8(t *testing.T) {
	hashed, digest := digestVector(t)
	if got := InputsDigest(docInputs()); got != digest {
		t.Fatalf("InputsDigest = %s, section 8 says %s", got, digest)
	}
	// The hashed bytes as the doc lists them give the same digest: the layout is right.
	sum := blake3.Sum256(hashed)
	if hex.EncodeToString(sum[:]) != digest {
		t.Fatalf("BLAKE3 of section 8's hashed bytes is %x, not %s", sum, digest)
	}
}

func TestBlake3OfficialVectors(t *testing.T) {
	// From BLAKE3's test_vectors.json: input i is byte (i mod 251), lengths 0 and 1024.
	for _, v := range []struct {
		n    int
		want string
	}{
		{0, "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"},
		{1, "2d3adedff11b61f14c886e35afa036736dcd87a74d27b5c1510225d0f592e213"},
		{1024, "42214739f095a406f3fc83deb889744ac00df831c10daa55189b5d121c855af7"},
	} {
		in := make([]byte, v.n)
		for i := range in {
			in[i] = byte(i % 251)
		}
		sum := blake3.Sum256(in)
		if got := hex.EncodeToString(sum[:]); got != v.want {
			t.Errorf("BLAKE3 of %d bytes = %s, want %s", v.n, got, v.want)
		}
	}
}
