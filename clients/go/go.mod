module github.com/jetinfer/jetinfer/clients/go

go 1.19

require (
	github.com/gomodule/redigo v1.8.3
	github.com/nats-io/nats.go v1.22.1
	github.com/vmihailenco/msgpack/v5 v5.3.5
	lukechampine.com/blake3 v1.1.6
)
