// A CORRECT Node.js `net` echo server (the shape of the Node docs' example),
// with an 'error' handler on every socket.
//
//   node node_echo.js [--port] PORT
//
// socket.pipe(socket) echoes with backpressure (the readable pauses while the
// writable is over its highWaterMark) and ends the writable side after the
// readable's 'end' (allowHalfOpen is false: node ends our side once the peer's
// FIN is read and everything before it is written). The 'error' handler keeps a
// reset (ECONNRESET/EPIPE) from becoming an uncaught exception. SIGTERM: exit 0.
'use strict';
const net = require('net');

const args = process.argv.slice(2).filter((a) => a !== '--port');
const port = Number(args[0]);

const server = net.createServer((socket) => {
  socket.on('error', () => socket.destroy());
  socket.pipe(socket);
});
server.on('error', (err) => { console.error(err); process.exit(1); });
server.listen(port, '127.0.0.1', () => {
  console.log(`LISTENING 127.0.0.1:${server.address().port}`);
});
process.on('SIGTERM', () => process.exit(0));
