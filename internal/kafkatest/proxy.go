package kafkatest

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// Proxy is a TCP proxy between a Kafka client and its brokers, for network
// faults: Cut black-holes every connection (bytes are held, not refused or
// reset, as when a link drops packets: the client's writes succeed, its
// reads wait, its deadlines fire), Heal lets them through again in order
// (what TCP retransmission delivers once the link is back), and Latency
// delays every chunk each way.
//
// A client goes through it with kgo.Dialer(p.Dial): each broker address
// the client dials gets its own listener on 127.0.0.1 forwarding to it, so
// the metadata's advertised addresses need no change. A connection opened
// while the link is cut is accepted by the proxy's listener but carries
// nothing until Heal, which the client sees as a request timeout, like a
// SYN that is never answered.
type Proxy struct {
	t testing.TB

	mu      sync.Mutex // guards the fields below
	cut     bool
	latency time.Duration
	healed  chan struct{} // closed on Heal; replaced on Cut
	routes  map[string]net.Listener
	closed  bool
}

// NewProxy returns a proxy that forwards, uncut, until the test ends.
func NewProxy(t testing.TB) *Proxy {
	p := &Proxy{t: t, routes: map[string]net.Listener{}, healed: make(chan struct{})}
	close(p.healed)
	t.Cleanup(p.close)
	return p
}

// Dial is a kgo.Dialer: it connects to the proxy's listener for host.
func (p *Proxy) Dial(ctx context.Context, network, host string) (net.Conn, error) {
	ln, err := p.route(host)
	if err != nil {
		return nil, err
	}
	var d net.Dialer
	return d.DialContext(ctx, network, ln.Addr().String())
}

// Cut black-holes the link until Heal.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.cut {
		p.cut = true
		p.healed = make(chan struct{})
	}
}

// Heal lets held and new bytes through again.
func (p *Proxy) Heal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cut {
		p.cut = false
		close(p.healed)
	}
}

// Latency delays each chunk forwarded in either direction by d.
func (p *Proxy) Latency(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.latency = d
}

// gate blocks while the link is cut, then waits out the latency.
func (p *Proxy) gate() {
	p.mu.Lock()
	healed, latency := p.healed, p.latency
	p.mu.Unlock()
	<-healed
	if latency > 0 {
		time.Sleep(latency)
	}
}

func (p *Proxy) route(host string) (net.Listener, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, errors.New("proxy closed")
	}
	if ln, ok := p.routes[host]; ok {
		return ln, nil
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p.routes[host] = ln
	go p.accept(ln, host)
	return ln, nil
}

func (p *Proxy) accept(ln net.Listener, host string) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go p.forward(c, host)
	}
}

// forward connects c to host once the link lets it, then copies both ways.
func (p *Proxy) forward(c net.Conn, host string) {
	defer c.Close()
	p.gate()
	up, err := net.DialTimeout("tcp", host, 10*time.Second)
	if err != nil {
		return
	}
	defer up.Close()
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		defer func() { done <- struct{}{} }()
		buf := make([]byte, 64<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				p.gate()
				if _, werr := dst.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				if errors.Is(err, io.EOF) {
					if tc, ok := dst.(*net.TCPConn); ok {
						_ = tc.CloseWrite()
					}
				}
				return
			}
		}
	}
	go pipe(up, c)
	go pipe(c, up)
	<-done
	<-done
}

func (p *Proxy) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	if p.cut {
		p.cut = false
		close(p.healed)
	}
	for _, ln := range p.routes {
		_ = ln.Close()
	}
}
