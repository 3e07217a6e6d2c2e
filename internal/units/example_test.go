package units_test

import (
	"fmt"

	"github.com/unplug-dev/unplug/internal/units"
)

func ExampleParseSize() {
	for _, s := range []string{"1500", "64k", "1M", "64KiB", "1MiB"} {
		n, _ := units.ParseSize(s)
		fmt.Printf("%s = %d = %s\n", s, n, units.FormatSize(n))
	}
	_, err := units.ParseSize("1.5M")
	fmt.Println(err)
	// Output:
	// 1500 = 1500 = 1500
	// 64k = 64000 = 64000
	// 1M = 1000000 = 1000000
	// 64KiB = 65536 = 64KiB
	// 1MiB = 1048576 = 1MiB
	// "1.5M" is not a size; use a whole number of bytes with an optional unit: 65536, 64k or 64kB (×1000), 1M or 1MB, 1G or 1GB, 64KiB (×1024), 1MiB, 1GiB
}
