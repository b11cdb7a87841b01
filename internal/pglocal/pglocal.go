// Package pglocal starts a throwaway PostgreSQL server from the server
// binaries installed on the machine (initdb, pg_ctl, postgres) in a temporary
// directory. It backs the product's demo command and the test harness.
//
// The server listens on 127.0.0.1 only, trusts every local connection for the
// superuser "postgres" and runs with durability switched off (fsync=off and
// friends), so it must never hold data that matters.
//
// initdb and postgres refuse to run as root. When the calling process is
// root, pglocal runs them as the "postgres" user if it exists, else as
// "nobody", and hands the temporary directory tree over to that user.
package pglocal

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// Superuser is the name of the superuser created by initdb; DSN connects as it.
const Superuser = "postgres"

// debianRoot is where Debian and Ubuntu install the versioned server binaries
// (/usr/lib/postgresql/<major>/bin); initdb is not put on PATH there.
const debianRoot = "/usr/lib/postgresql"

// installHint tells the reader how to get the binaries.
const installHint = "install the PostgreSQL server, e.g. `apt-get install -y postgresql`"

// defaultStartTimeout bounds Start and Restart when ctx has no deadline.
const defaultStartTimeout = 60 * time.Second

// maxSocketDirLen keeps unix_socket_directories short enough for
// "<dir>/.s.PGSQL.<port>" to fit in sun_path (107 bytes on Linux).
const maxSocketDirLen = 90

// ErrClosed is returned by Stop and Restart after Close.
var ErrClosed = errors.New("pglocal: server closed")

// Options configures Start.
type Options struct {
	// Dir is the parent directory in which Start creates its own temporary
	// directory (holding the data dir, the log file and the unix socket).
	// "" means os.TempDir(). Close removes only the directory Start created.
	// When running as root, every ancestor of Dir must be traversable by the
	// unprivileged server user.
	Dir string
	// Port is the TCP port to listen on at 127.0.0.1; 0 picks a free one.
	Port int
	// Logger receives progress messages; nil discards them.
	Logger *slog.Logger
	// Settings are extra postgresql.conf lines, e.g. "fsync=off" for tests.
	// They come after the defaults, so they override them.
	Settings []string
	// TLS, when set, turns ssl on with these files, copied into the data
	// dir so that the server user can read them.
	TLS *TLS
	// HBA are pg_hba.conf lines put before initdb's own, which trust
	// every connection: e.g. "hostssl all app 127.0.0.1/32 cert" and
	// "host all app 127.0.0.1/32 reject" to let the role app in only with
	// a client certificate. The superuser keeps initdb's trust, which
	// Start and Restart use to see that the server is up.
	HBA []string
}

// TLS names the PEM files of a server with ssl on.
type TLS struct {
	// CertFile and KeyFile are the server's certificate and key.
	CertFile, KeyFile string
	// CAFile, when set, is the CA that client certificates must chain to
	// (ssl_ca_file), for hostssl ... cert lines and clientcert=verify-full.
	CAFile string
}

// Server is a running (or stopped) throwaway PostgreSQL server. Its methods
// are safe for concurrent use.
type Server struct {
	log     *slog.Logger
	bins    binaries
	cred    *syscall.Credential // nil: run as the current user
	dir     string              // temporary directory Start created
	dataDir string
	logFile string
	port    int

	mu      sync.Mutex
	running bool
	closed  bool
}

// binaries are the absolute paths of the server programs.
type binaries struct {
	initdb string
	pgCtl  string
}

// Available reports whether the PostgreSQL server binaries can be found:
// initdb and pg_ctl on PATH or in /usr/lib/postgresql/<major>/bin. The error
// says how to install them.
func Available() error {
	_, err := findBinaries()
	return err
}

// Start creates a temporary directory, runs initdb in it, starts the server
// and waits until it accepts connections. ctx bounds the whole start-up
// (60s when it has no deadline). On failure nothing is left behind and the
// error carries the tail of the server log.
func Start(ctx context.Context, opts Options) (_ *Server, err error) {
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := withDefaultDeadline(ctx)
	defer cancel()

	bins, err := findBinaries()
	if err != nil {
		return nil, err
	}
	cred, err := serverCredential()
	if err != nil {
		return nil, err
	}
	if cred != nil && opts.Dir != "" {
		if err := checkTraversable(opts.Dir, cred); err != nil {
			return nil, err
		}
	}

	port := opts.Port
	if port == 0 {
		if port, err = FreePort(); err != nil {
			return nil, err
		}
	}

	dir, err := os.MkdirTemp(opts.Dir, "pglocal-")
	if err != nil {
		return nil, fmt.Errorf("create temporary directory in %q: %w", opts.Dir, err)
	}
	s := &Server{
		log:     logger.With("component", "pglocal", "port", port),
		bins:    bins,
		cred:    cred,
		dir:     dir,
		dataDir: filepath.Join(dir, "data"),
		logFile: filepath.Join(dir, "postgres.log"),
		port:    port,
	}
	defer func() {
		if err != nil {
			if cerr := s.Close(); cerr != nil {
				s.log.Warn("cleanup after failed start", "err", cerr)
			}
		}
	}()

	if cred != nil {
		// MkdirTemp made dir 0700 and owned by root; hand it over.
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			return nil, fmt.Errorf("chown %s to uid %d: %w", dir, cred.Uid, err)
		}
	}

	start := time.Now()
	if err := s.initdb(ctx); err != nil {
		return nil, err
	}
	settings := opts.Settings
	if opts.TLS != nil {
		tlsSettings, err := s.installTLS(opts.TLS)
		if err != nil {
			return nil, err
		}
		settings = append(tlsSettings, settings...)
	}
	if err := s.writeConfig(settings); err != nil {
		return nil, err
	}
	if err := s.prependHBA(opts.HBA); err != nil {
		return nil, err
	}
	s.log.Debug("initdb done", "dir", dir, "took", time.Since(start))

	if err := s.start(ctx); err != nil {
		return nil, err
	}
	s.log.Info("postgres started", "dir", dir, "took", time.Since(start))
	return s, nil
}

// DSN returns a connection string for database ("" means "postgres") as the
// superuser over TCP, e.g.
// postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable.
func (s *Server) DSN(database string) string {
	if database == "" {
		database = "postgres"
	}
	u := url.URL{
		Scheme:   "postgres",
		User:     url.User(Superuser),
		Host:     net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)),
		Path:     "/" + database,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// Port returns the TCP port the server listens on at 127.0.0.1.
func (s *Server) Port() int { return s.port }

// Dir returns the temporary directory holding the data dir and the log file.
func (s *Server) Dir() string { return s.dir }

// DataDir returns the PostgreSQL data directory.
func (s *Server) DataDir() string { return s.dataDir }

// LogFile returns the path of the server log.
func (s *Server) LogFile() string { return s.logFile }

// Stop shuts the server down (pg_ctl stop -m fast) and keeps the data dir,
// so that Restart can bring it back; use it to simulate a database outage.
// Stopping a stopped server is a no-op.
func (s *Server) Stop(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if !s.running {
		return nil
	}
	if err := s.pgCtlStop(ctx, "fast"); err != nil {
		return err
	}
	s.running = false
	s.log.Info("postgres stopped")
	return nil
}

// Restart starts the server again on the same port with the same data, and
// waits until it accepts connections. If the server is running it is stopped
// first.
func (s *Server) Restart(ctx context.Context) error {
	ctx, cancel := withDefaultDeadline(ctx)
	defer cancel()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if s.running {
		if err := s.pgCtlStop(ctx, "fast"); err != nil {
			return err
		}
		s.running = false
	}
	start := time.Now()
	if err := s.start(ctx); err != nil {
		return err
	}
	s.log.Info("postgres restarted", "took", time.Since(start))
	return nil
}

// Close stops the server if it is running and removes the temporary
// directory. It is idempotent.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true

	var errs []error
	if s.running || s.pidFileExists() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if err := s.pgCtlStop(ctx, "fast"); err != nil {
			s.log.Warn("fast shutdown failed, trying immediate", "err", err)
			if err := s.pgCtlStop(ctx, "immediate"); err != nil {
				errs = append(errs, err)
			}
		}
		cancel()
		s.running = false
	}
	if err := os.RemoveAll(s.dir); err != nil {
		errs = append(errs, fmt.Errorf("remove %s: %w", s.dir, err))
	}
	s.log.Debug("postgres closed", "dir", s.dir)
	return errors.Join(errs...)
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pick a free port on 127.0.0.1: %w", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		return 0, fmt.Errorf("release port %d: %w", port, err)
	}
	return port, nil
}

// initdb creates the data directory.
func (s *Server) initdb(ctx context.Context) error {
	out, err := s.run(ctx, s.bins.initdb,
		"-D", s.dataDir,
		"-A", "trust",
		"-U", Superuser,
		"--no-sync",
		"-E", "UTF8",
		"--locale=C",
	)
	if err != nil {
		return fmt.Errorf("initdb in %s: %w: %s", s.dir, err, tail(out, 20))
	}
	return nil
}

// writeConfig writes pglocal.conf into the data dir and includes it from
// postgresql.conf.
func (s *Server) writeConfig(extra []string) error {
	sockDir := s.dir
	if len(sockDir) > maxSocketDirLen {
		s.log.Debug("temporary directory too long for a unix socket; TCP only", "dir", sockDir)
		sockDir = ""
	}
	var b strings.Builder
	b.WriteString("# Written by pglocal: a throwaway server, no durability.\n")
	fmt.Fprintf(&b, "listen_addresses = '127.0.0.1'\n")
	fmt.Fprintf(&b, "port = %d\n", s.port)
	fmt.Fprintf(&b, "unix_socket_directories = %s\n", quoteConf(sockDir))
	for _, line := range []string{
		"fsync = off",
		"synchronous_commit = off",
		"full_page_writes = off",
		"max_connections = 200",
		"shared_buffers = 128MB",
	} {
		b.WriteString(line + "\n")
	}
	for _, line := range extra {
		b.WriteString(line + "\n")
	}
	conf := filepath.Join(s.dataDir, "pglocal.conf")
	if err := s.writeFile(conf, b.String()); err != nil {
		return err
	}

	main := filepath.Join(s.dataDir, "postgresql.conf")
	f, err := os.OpenFile(main, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", main, err)
	}
	if _, err := f.WriteString("\ninclude 'pglocal.conf'\n"); err != nil {
		_ = f.Close() // the write error is the one to report
		return fmt.Errorf("append to %s: %w", main, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", main, err)
	}
	return nil
}

// installTLS copies the certificate files into the data dir and returns
// the settings that turn ssl on with them.
func (s *Server) installTLS(t *TLS) ([]string, error) {
	files := []struct{ src, dst, setting string }{
		{t.CertFile, "server.crt", "ssl_cert_file"},
		{t.KeyFile, "server.key", "ssl_key_file"},
		{t.CAFile, "root.crt", "ssl_ca_file"},
	}
	settings := []string{"ssl = on"}
	for _, f := range files {
		if f.src == "" {
			if f.setting == "ssl_ca_file" {
				continue
			}
			return nil, fmt.Errorf("pglocal TLS: %s is required", f.setting)
		}
		b, err := os.ReadFile(f.src)
		if err != nil {
			return nil, fmt.Errorf("pglocal TLS: %w", err)
		}
		// The server refuses a key others can read: writeFile makes it 0600.
		if err := s.writeFile(filepath.Join(s.dataDir, f.dst), string(b)); err != nil {
			return nil, err
		}
		settings = append(settings, fmt.Sprintf("%s = %s", f.setting, quoteConf(f.dst)))
	}
	return settings, nil
}

// prependHBA puts lines before the pg_hba.conf initdb wrote; the first
// matching line wins.
func (s *Server) prependHBA(lines []string) error {
	if len(lines) == 0 {
		return nil
	}
	path := filepath.Join(s.dataDir, "pg_hba.conf")
	old, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	return s.writeFile(path, "# Written by pglocal (Options.HBA).\n"+strings.Join(lines, "\n")+"\n\n"+string(old))
}

// writeFile writes a file readable by the server user.
func (s *Server) writeFile(path, content string) error {
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if s.cred != nil {
		if err := os.Chown(path, int(s.cred.Uid), int(s.cred.Gid)); err != nil {
			return fmt.Errorf("chown %s to uid %d: %w", path, s.cred.Uid, err)
		}
	}
	return nil
}

// start runs pg_ctl start and waits until the server accepts connections.
// Callers hold s.mu or own s exclusively. On failure the server is not left
// running.
func (s *Server) start(ctx context.Context) (err error) {
	timeout := defaultStartTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	secs := max(int((timeout+time.Second-1)/time.Second), 1)

	s.running = true // until proven otherwise: Close must stop it
	defer func() {
		if err != nil {
			s.stopAfterFailure()
		}
	}()

	// -w makes pg_ctl notice a postmaster that dies during start-up instead
	// of leaving us polling until the deadline.
	out, err := s.run(ctx, s.bins.pgCtl,
		"start", "-w", "-t", strconv.Itoa(secs),
		"-D", s.dataDir,
		"-l", s.logFile,
	)
	if err != nil {
		return fmt.Errorf("pg_ctl start in %s: %w: %s\nserver log:\n%s",
			s.dataDir, err, tail(out, 5), s.logTail())
	}
	if err := s.waitReady(ctx); err != nil {
		return fmt.Errorf("wait for postgres on port %d: %w\nserver log:\n%s", s.port, err, s.logTail())
	}
	return nil
}

// stopAfterFailure makes sure no server is left running after a failed start.
func (s *Server) stopAfterFailure() {
	if s.pidFileExists() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		if err := s.pgCtlStop(ctx, "immediate"); err != nil {
			s.log.Warn("stop after failed start", "err", err)
		}
	}
	s.running = false
}

// waitReady connects with pgx until a ping succeeds or ctx is done.
func (s *Server) waitReady(ctx context.Context) error {
	dsn := s.DSN("postgres")
	backoff := 5 * time.Millisecond
	for {
		err := ping(ctx, dsn)
		if err == nil {
			return nil
		}
		timer := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			timer.Stop()
			return fmt.Errorf("%w (last error: %w)", ctx.Err(), err)
		case <-timer.C:
		}
		backoff = min(backoff*2, 250*time.Millisecond)
	}
}

func ping(ctx context.Context, dsn string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }()
	return conn.Ping(ctx)
}

// pgCtlStop runs pg_ctl stop with the given shutdown mode and waits for the
// server to exit.
func (s *Server) pgCtlStop(ctx context.Context, mode string) error {
	out, err := s.run(ctx, s.bins.pgCtl, "stop", "-w", "-D", s.dataDir, "-m", mode)
	if err != nil {
		if !s.pidFileExists() {
			return nil // not running (any more): nothing to stop
		}
		return fmt.Errorf("pg_ctl stop -m %s in %s: %w: %s", mode, s.dataDir, err, tail(out, 5))
	}
	return nil
}

func (s *Server) pidFileExists() bool {
	_, err := os.Stat(filepath.Join(s.dataDir, "postmaster.pid"))
	return err == nil
}

// run runs a server program as the server user in s.dir and returns its
// combined output.
func (s *Server) run(ctx context.Context, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = s.dir // the caller's working directory may be unreadable for the server user
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	if s.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	}
	// pg_ctl redirects the postmaster's output to the log file, but do not
	// hang forever should a grandchild keep the pipe open.
	cmd.WaitDelay = 5 * time.Second
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	s.log.Debug("run", "cmd", filepath.Base(name), "args", args)
	err := cmd.Run()
	return out.Bytes(), err
}

// logTail returns the last lines of the server log.
func (s *Server) logTail() string {
	f, err := os.Open(s.logFile)
	if err != nil {
		return fmt.Sprintf("(no server log: %v)", err)
	}
	defer func() { _ = f.Close() }() // read only
	const maxBytes = 8 << 10
	if fi, err := f.Stat(); err == nil && fi.Size() > maxBytes {
		if _, err := f.Seek(-maxBytes, io.SeekEnd); err != nil {
			return fmt.Sprintf("(read server log: %v)", err)
		}
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return fmt.Sprintf("(read server log: %v)", err)
	}
	return tail(b, 30)
}

// tail returns the last n lines of b.
func tail(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// quoteConf quotes a postgresql.conf string value.
func quoteConf(v string) string {
	return "'" + strings.ReplaceAll(v, "'", "''") + "'"
}

func withDefaultDeadline(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, defaultStartTimeout)
}

// findBinaries looks for initdb and pg_ctl on PATH, then in the highest
// /usr/lib/postgresql/<major>/bin.
func findBinaries() (binaries, error) {
	if initdb, err := exec.LookPath("initdb"); err == nil {
		if pgCtl, err := exec.LookPath("pg_ctl"); err == nil {
			return binaries{initdb: resolve(initdb), pgCtl: resolve(pgCtl)}, nil
		}
	}
	entries, err := os.ReadDir(debianRoot)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return binaries{}, fmt.Errorf("look for PostgreSQL in %s: %w", debianRoot, err)
	}
	var majors []float64
	byMajor := map[float64]string{}
	for _, e := range entries {
		v, err := strconv.ParseFloat(e.Name(), 64) // "15", "9.6"
		if err != nil {
			continue
		}
		bin := filepath.Join(debianRoot, e.Name(), "bin")
		if isExecutable(filepath.Join(bin, "initdb")) && isExecutable(filepath.Join(bin, "pg_ctl")) {
			majors = append(majors, v)
			byMajor[v] = bin
		}
	}
	if len(majors) == 0 {
		return binaries{}, fmt.Errorf("PostgreSQL server binaries (initdb, pg_ctl) not found on PATH or in %s/*/bin; %s", debianRoot, installHint)
	}
	sort.Float64s(majors)
	bin := byMajor[majors[len(majors)-1]]
	return binaries{initdb: filepath.Join(bin, "initdb"), pgCtl: filepath.Join(bin, "pg_ctl")}, nil
}

// resolve follows symlinks so that pg_ctl finds postgres next to its real
// location; it falls back to the path it was given.
func resolve(path string) string {
	if p, err := filepath.EvalSymlinks(path); err == nil {
		return p
	}
	return path
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

// serverCredential returns the unprivileged user to run the server as when
// this process is root, or nil to run as the current user.
func serverCredential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	var errs []error
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		uid, err := strconv.ParseUint(u.Uid, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("parse uid %q of user %s: %w", u.Uid, name, err)
		}
		gid, err := strconv.ParseUint(u.Gid, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("parse gid %q of user %s: %w", u.Gid, name, err)
		}
		// Groups is empty on purpose: drop root's supplementary groups.
		return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}, nil
	}
	return nil, fmt.Errorf("running as root, and postgres refuses to; no unprivileged user to run it as: %w", errors.Join(errs...))
}

// checkTraversable verifies that the server user can reach dir: every
// directory from / down to dir must be searchable by it.
func checkTraversable(dir string, cred *syscall.Credential) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("resolve %s: %w", dir, err)
	}
	for p := abs; ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("check %s: %w", p, err)
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if ok {
			perm := fi.Mode().Perm()
			var can bool
			switch {
			case st.Uid == cred.Uid:
				can = perm&0o100 != 0
			case st.Gid == cred.Gid:
				can = perm&0o010 != 0
			default:
				can = perm&0o001 != 0
			}
			if !can {
				return fmt.Errorf("directory %s (mode %v) is not traversable by uid %d, which runs postgres because this process is root; use a directory under /tmp or chmod o+x it", p, perm, cred.Uid)
			}
		}
		if p == filepath.Dir(p) {
			return nil
		}
	}
}
