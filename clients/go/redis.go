package jetinfer

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/gomodule/redigo/redis"
)

// redisTimeout bounds one Redis command's read or write.
const redisTimeout = 10 * time.Second

// redisAddr is where and how to dial Redis, read from a URL.
type redisAddr struct {
	network, address string
	options          []redis.DialOption
}

// parseRedisURL reads redis://[user:pass@]host[:port][/db], rediss://… (TLS), and the
// Unix-socket forms unix:///path/to.sock and redis+unix:///path/to.sock, which take the
// database and password as query parameters (?db=1&pass=secret, or user:pass@).
func parseRedisURL(raw string) (redisAddr, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return redisAddr{}, fmt.Errorf("jetinfer: redis URL: %w", err)
	}
	bad := func(why string) (redisAddr, error) {
		return redisAddr{}, fmt.Errorf("jetinfer: redis URL %q: %s", raw, why)
	}
	var a redisAddr
	switch u.Scheme {
	case "redis", "rediss":
		a.network = "tcp"
		host, port := u.Hostname(), u.Port()
		if host == "" {
			host = "localhost"
		}
		if port == "" {
			port = "6379"
		}
		a.address = net.JoinHostPort(host, port)
		if db := strings.Trim(u.Path, "/"); db != "" {
			n, err := strconv.Atoi(db)
			if err != nil {
				return bad("the path must be a database number")
			}
			a.options = append(a.options, redis.DialDatabase(n))
		}
		a.options = append(a.options, redis.DialUseTLS(u.Scheme == "rediss"))
	case "unix", "redis+unix":
		a.network = "unix"
		a.address = u.Path
		if a.address == "" {
			return bad("no socket path (unix:///path/to/redis.sock)")
		}
	default:
		return bad("scheme must be redis, rediss, unix or redis+unix")
	}
	q := u.Query()
	if db := q.Get("db"); db != "" {
		n, err := strconv.Atoi(db)
		if err != nil {
			return bad("db must be a number")
		}
		a.options = append(a.options, redis.DialDatabase(n))
	}
	if u.User != nil {
		if pass, ok := u.User.Password(); ok {
			if name := u.User.Username(); name != "" {
				a.options = append(a.options, redis.DialUsername(name))
			}
			a.options = append(a.options, redis.DialPassword(pass))
		}
	} else if pass := q.Get("pass"); pass != "" {
		a.options = append(a.options, redis.DialPassword(pass))
	}
	a.options = append(a.options,
		redis.DialConnectTimeout(redisTimeout),
		redis.DialReadTimeout(redisTimeout),
		redis.DialWriteTimeout(redisTimeout))
	return a, nil
}

// newRedisPool makes a pool of connections to the URL's server; it dials lazily.
func newRedisPool(raw string, maxIdle int) (*redis.Pool, error) {
	a, err := parseRedisURL(raw)
	if err != nil {
		return nil, err
	}
	return &redis.Pool{
		MaxIdle:     maxIdle,
		IdleTimeout: 5 * time.Minute,
		Dial: func() (redis.Conn, error) {
			return redis.Dial(a.network, a.address, a.options...)
		},
		// A connection idle for a while may have been closed by the server.
		TestOnBorrow: func(c redis.Conn, idle time.Time) error {
			if time.Since(idle) < time.Minute {
				return nil
			}
			_, err := c.Do("PING")
			return err
		},
	}, nil
}
