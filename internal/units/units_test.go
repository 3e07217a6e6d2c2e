package units

import (
	"errors"
	"testing"
)

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
	}{
		{"0", 0},
		{"1500", 1500},
		{"12B", 12},
		{"64k", 64_000},
		{"64K", 64_000},
		{"64kB", 64_000},
		{"64KB", 64_000},
		{"1M", 1_000_000},
		{"1MB", 1_000_000},
		{"2G", 2_000_000_000},
		{"2GB", 2_000_000_000},
		{"64KiB", 65_536},
		{"1MiB", 1_048_576},
		{"1GiB", 1 << 30},
		{"64 KiB", 65_536},
		{" 10k ", 10_000},
	}
	for _, tt := range tests {
		got, err := ParseSize(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
		}
	}
}

func TestParseSizeErrors(t *testing.T) {
	for _, in := range []string{"", "k", "-1", "+5", "1.5M", "1m", "1 Mi", "64kib", "ten", "9223372036854775807K", "1e6"} {
		_, err := ParseSize(in)
		var se *SizeError
		if !errors.Is(err, ErrSize) || !errors.As(err, &se) || se.Text != in {
			t.Errorf("ParseSize(%q) error = %v, want a *SizeError for it", in, err)
		}
	}
}

func TestFormatSizeRoundTrips(t *testing.T) {
	tests := []struct {
		n    int64
		want string
	}{
		{0, "0"}, {1000, "1000"}, {1_000_000, "1000000"}, {1500, "1500"},
		{1024, "1KiB"}, {65_536, "64KiB"}, {1 << 20, "1MiB"}, {3 << 30, "3GiB"}, {1536, "1536"},
		{2_000_000_000, "2000000000"}, {1_024_000, "1024000"}, {1_000 << 10, "1024000"},
	}
	for _, tt := range tests {
		got := FormatSize(tt.n)
		if got != tt.want {
			t.Errorf("FormatSize(%d) = %q, want %q", tt.n, got, tt.want)
		}
		if back, err := ParseSize(got); err != nil || back != tt.n {
			t.Errorf("ParseSize(FormatSize(%d) = %q) = %d, %v", tt.n, got, back, err)
		}
	}
}
