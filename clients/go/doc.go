// Package jetinfer is a Go client of jetinfer, the NATS JetStream + Redis inference
// worker pool, written against docs/wire-format.md (the Rust crate jetinfer-client is the
// reference implementation of the same contract).
//
// A producer publishes a job to JetStream and reads its result from Redis:
//
//	c, err := jetinfer.Connect("nats://127.0.0.1:4222", "redis://127.0.0.1:6379")
//	job := &jetinfer.Job{ID: "go-1", Model: "mlp",
//		Inputs: []jetinfer.Tensor{jetinfer.F32Tensor([]int64{16}, values)}}
//	res, err := c.SubmitAndWait(ctx, jetinfer.P1, job)
//	if err == nil { err = res.Err() }   // status error/expired as *ResultError
//
// Layout, downhill (each file uses only those above it):
//
//	errors.go   result statuses, the stable error codes, and the typed errors:
//	            InvalidJobError, RejectedError (stream full / no stream), StoreError,
//	            DecodeError, TimeoutError, ResultError
//	tensor.go   DType, Tensor: one sample, little-endian row-major bytes
//	job.go      Priority, Job, the id/name rules and limits of section 5
//	digest.go   the BLAKE3 inputs digest (section 8), the reference of section 10
//	wire.go     MessagePack encoding of jobs and stored inputs, decoding of results
//	result.go   Result and its status
//	redis.go    Redis URLs (redis://, rediss://, unix://, redis+unix://) and the pool
//	partitions.go  the choice of partition stream and input store by job id (FNV-1a-32),
//	            stream and subject names, each priority's kept partition count
//	options.go  the options of Connect and New, and the defaults
//	client.go   Client: Submit, Get, Watch/Wait, SubmitAndWait; inputs by reference
//	            stored in the id's input store
//	publish.go  publishing to the job's partition: the count read from JetStream, read
//	            again when a publish finds no stream
package jetinfer
