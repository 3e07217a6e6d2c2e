package services

// patternLine is the unit of the byte pattern that source and /bytes/N send:
// 63 printable characters and a newline, so the stream is readable in a
// terminal and a receiver can check every byte's position.
const patternLine = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-\n"

// patternChunk is patternLine repeated; its length is a multiple of the line
// so consecutive writes continue the pattern seamlessly. Read-only.
var patternChunk = func() []byte {
	b := make([]byte, 0, 32<<10)
	for len(b) < cap(b) {
		b = append(b, patternLine...)
	}
	return b
}()

// Pattern returns n bytes of the pattern the source service writes,
// starting at offset off of the stream.
func Pattern(off int64, n int) []byte {
	out := make([]byte, 0, n)
	i := int(off % int64(len(patternLine)))
	for len(out) < n {
		k := min(n-len(out), len(patternChunk)-i)
		out = append(out, patternChunk[i:i+k]...)
		i = 0
	}
	return out
}
