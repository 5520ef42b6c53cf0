// BUGGY: the Node.js `net` echo server WITHOUT an 'error' handler on the socket.
//
//   node node_echo_noerror.js [--port] PORT
//
// Bug: a client that resets its connection (RST, e.g. SO_LINGER 0, or closes
// with unread data) makes the socket emit 'error' (ECONNRESET or EPIPE); with no
// listener, Node throws it as an uncaught exception and the whole process dies,
// taking every other connection with it. Property that must catch it: survives.
// Otherwise identical to node_echo.js. SIGTERM: exit 0.
'use strict';
const net = require('net');

const args = process.argv.slice(2).filter((a) => a !== '--port');
const port = Number(args[0]);

const server = net.createServer((socket) => {
  socket.pipe(socket); // no socket.on('error', ...): ECONNRESET kills the process
});
server.on('error', (err) => { console.error(err); process.exit(1); });
server.listen(port, '127.0.0.1', () => {
  console.log(`LISTENING 127.0.0.1:${server.address().port}`);
});
process.on('SIGTERM', () => process.exit(0));
