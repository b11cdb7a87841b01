package debeziumtest

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// MariaDB is a throwaway MariaDB server with the binary log on (row format,
// full row images), the source of Debezium's MariaDB connector. It is
// driven through the mariadb command-line client, so the tests need no
// MySQL driver.
type MariaDB struct {
	// Port is the TCP port at 127.0.0.1.
	Port int
	dir  string
	cmd  *exec.Cmd
	done chan struct{}
	log  string
}

// StartMariaDB initialises a data directory in a temporary directory and
// starts mariadbd on port (a free one when 0), as the mysql user when the
// caller is root (mariadbd refuses to run as root otherwise).
func StartMariaDB(ctx context.Context, port int) (_ *MariaDB, err error) {
	server, err := lookBin("mariadbd")
	if err != nil {
		return nil, err
	}
	install, err := lookBin("mariadb-install-db")
	if err != nil {
		return nil, err
	}
	if port == 0 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		port = l.Addr().(*net.TCPAddr).Port
		_ = l.Close()
	}
	dir, err := os.MkdirTemp("", "mariadb-")
	if err != nil {
		return nil, err
	}
	m := &MariaDB{Port: port, dir: dir, done: make(chan struct{}), log: filepath.Join(dir, "server.log")}
	defer func() {
		if err != nil {
			_ = m.Close()
		}
	}()
	var asUser []string
	if os.Geteuid() == 0 {
		u, err := user.Lookup("mysql")
		if err != nil {
			return nil, fmt.Errorf("mariadbd runs as the mysql user when started by root: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			return nil, err
		}
		asUser = []string{"--user=mysql"}
	}
	data := filepath.Join(dir, "data")
	args := append([]string{"--no-defaults", "--datadir=" + data, "--auth-root-authentication-method=normal", "--skip-test-db"}, asUser...)
	if out, err := exec.CommandContext(ctx, install, args...).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("mariadb-install-db: %w\n%s", err, out)
	}
	logf, err := os.Create(m.log)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	args = append([]string{"--no-defaults", "--datadir=" + data, "--socket=" + filepath.Join(dir, "sock"),
		"--port=" + strconv.Itoa(port), "--bind-address=127.0.0.1", "--skip-name-resolve",
		"--server-id=1", "--log-bin=" + filepath.Join(data, "binlog"), "--binlog-format=ROW", "--binlog-row-image=FULL",
		"--default-time-zone=+00:00", "--character-set-server=utf8mb4", "--innodb-flush-log-at-trx-commit=0",
		"--pid-file=" + filepath.Join(dir, "pid")}, asUser...)
	m.cmd = exec.Command(server, args...)
	m.cmd.Stdout, m.cmd.Stderr = logf, logf
	if err := m.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start mariadbd: %w", err)
	}
	go func() { _ = m.cmd.Wait(); close(m.done) }()
	for {
		if _, err := m.Query(ctx, "SELECT 1"); err == nil {
			return m, nil
		}
		select {
		case <-m.done:
			return nil, fmt.Errorf("mariadbd exited: %s\n%s", m.cmd.ProcessState, m.logTail())
		case <-ctx.Done():
			return nil, fmt.Errorf("mariadbd not ready: %w\n%s", ctx.Err(), m.logTail())
		case <-time.After(100 * time.Millisecond): // polling interval of a readiness wait
		}
	}
}

func lookBin(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/usr/bin"} {
		if p := filepath.Join(dir, name); fileExists(p) {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found: install the MariaDB server (scripts/deps debezium: apt-get install mariadb-server)", name)
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

func (m *MariaDB) logTail() string {
	b, _ := os.ReadFile(m.log)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// Exec runs SQL statements (separated by semicolons) as root in one
// client session.
func (m *MariaDB) Exec(ctx context.Context, sql string) error {
	_, err := m.client(ctx, sql)
	return err
}

// Query runs one SELECT as root and returns its rows. Every value comes
// back exactly: the query is wrapped so that the client prints each value
// as hex, NULL as nil.
func (m *MariaDB) Query(ctx context.Context, sql string, columns ...string) ([][]*string, error) {
	if len(columns) > 0 {
		var wrapped []string
		for _, c := range columns {
			wrapped = append(wrapped, fmt.Sprintf("IFNULL(HEX(CAST(%s AS CHAR CHARACTER SET utf8mb4)), '~')", c))
		}
		sql = fmt.Sprintf("SELECT %s FROM (%s) AS q", strings.Join(wrapped, ", "), sql)
	}
	out, err := m.client(ctx, sql)
	if err != nil {
		return nil, err
	}
	var rows [][]*string
	for _, line := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		if line == "" {
			continue
		}
		var row []*string
		for _, f := range strings.Split(line, "\t") {
			if len(columns) == 0 {
				v := f
				row = append(row, &v)
				continue
			}
			if f == "~" {
				row = append(row, nil)
				continue
			}
			b, err := hex.DecodeString(f)
			if err != nil {
				return nil, fmt.Errorf("value %q: %w", f, err)
			}
			v := string(b)
			row = append(row, &v)
		}
		rows = append(rows, row)
	}
	return rows, nil
}

func (m *MariaDB) client(ctx context.Context, sql string) (string, error) {
	cl, err := lookBin("mariadb")
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, cl, "--no-defaults", "-uroot", "-h127.0.0.1", "-P"+strconv.Itoa(m.Port),
		"--batch", "--skip-column-names", "--default-character-set=utf8mb4")
	cmd.Stdin = strings.NewReader(sql)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("mariadb: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}

// Close stops the server and removes its directory.
func (m *MariaDB) Close() error {
	var errs []error
	if m.cmd != nil && m.cmd.Process != nil {
		_ = m.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-m.done:
		case <-time.After(30 * time.Second):
			_ = m.cmd.Process.Kill()
			<-m.done
		}
	}
	if err := os.RemoveAll(m.dir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
