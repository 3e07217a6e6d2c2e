//go:build !unix

package control

import "os"

// fileOwner reports no owner: this system has no uids.
func fileOwner(os.FileInfo) (int, bool) { return 0, false }
