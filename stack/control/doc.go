// Package control is the local control channel between a running
// `unplug serve` and the `unplug fault` / `unplug status` commands.
//
// The channel is a unix stream socket, never a TCP listener: only processes on
// the same host that can open the socket file may talk to it, and the server
// additionally checks the peer's credentials (SO_PEERCRED on Linux,
// LOCAL_PEERCRED on macOS) and accepts only its own uid and root. Root is
// allowed because it can already read and write every file and process of the
// server's user; refusing it would only break `sudo unplug fault`.
//
// The wire protocol is one request and one response per connection, each a
// single JSON object followed by a newline:
//
//	-> {"v":1,"op":"fault.add","args":["drop dir=in for=3s"]}
//	<- {"ok":true,"data":{"id":3}}
//	<- {"ok":false,"error":"unknown operation fault.ad (this unplug serve understands: fault.add, status)"}
//
// Requests are limited to MaxRequestSize bytes. A request without "v" is
// taken as version 1; any other version is refused with an error naming both
// versions.
//
// Server side: NewServer, Handle for each operation, Listen, then Serve until
// the context ends; Close removes the socket. Client side: Call. Both default
// to DefaultPath.
package control
