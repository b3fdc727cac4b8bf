'use strict';
// serialport 4's `new SerialPort(path, options)` over a pty: the SKSTACK-IP emulator is a
// pseudo-terminal, so a tty read stream stands for the native binding. Reads arrive as libuv
// delivers them (whatever the pty holds), as serialport's would.
const EventEmitter = require('events');
const fs = require('fs');
const tty = require('tty');

class SerialPort extends EventEmitter {
  constructor(path, options) {
    super();
    this.path = path;
    this.options = options || {};
    this.isOpen = false;
    setImmediate(() => {
      try {
        this.fd = fs.openSync(path, fs.constants.O_RDWR | fs.constants.O_NOCTTY);
        this.stream = new tty.ReadStream(this.fd);
        this.stream.setRawMode(true);
        this.stream.on('data', (buf) => this.emit('data', buf));
        this.stream.on('error', (err) => this.emit('error', err));
        this.isOpen = true;
        this.emit('open');
      } catch (err) {
        this.emit('error', err);
      }
    });
  }

  write(buf, callback) {
    fs.write(this.fd, buf, 0, buf.length, null, (err) => {
      if (callback) callback(err || null);
    });
  }

  close(callback) {
    this.isOpen = false;
    if (this.stream) this.stream.destroy();
    if (callback) setImmediate(() => callback(null));
  }
}

module.exports = SerialPort;
