'use strict';
// node-echonet-lite's B-route client (a Wi-SUN dongle on a serial port) against amistack's
// SKSTACK-IP module emulator, which is a pty (`serialport` is the pty shim in serialport-pty/).
//
// usage: node wisunb.js PTY RBID PASSWORD [TIMEOUT_MS]
//
// init (SKSREG SFE 0, SKSETPWD, SKSETRBID), startDiscovery (SKSCAN, SKSREG S2/S3, SKLL64,
// SKJOIN, then a Get sent by SKSENDTO whose answer is an ERXUDP), then a Get of E7. Prints one
// JSON line: {"event": "found", ...}, {"event": "e7", ...}, and {"event": "done"}, or
// {"event": "error"|"timeout", ...} (exit 1).

const EchonetLite = require('node-echonet-lite');

const [path, id, pass, timeoutArg] = process.argv.slice(2);
const TIMEOUT_MS = Number(timeoutArg || 20000);
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');
const fail = (event, detail) => { out({ event, detail: String(detail) }); process.exit(1); };

setTimeout(() => fail('timeout', 'no answer within ' + TIMEOUT_MS + ' ms'), TIMEOUT_MS);

const el = new EchonetLite({ type: 'wisunb', adapter: 'bp35a1', path, id, pass });
el.init((err) => {
	if (err) fail('error', err);
	el.startDiscovery((err, res) => {
		if (err) fail('error', err);
		const device = res['device'];
		const eoj = device['eoj'].find((e) => e[0] === 0x02 && e[1] === 0x88);
		if (!eoj) return;
		el.stopDiscovery();
		out({ event: 'found', address: device['address'], eoj });
		el.getPropertyValue(device['address'], eoj, 0xE7, (err, res) => {
			if (err) fail('error', err);
			const msg = res['message'];
			out({ event: 'e7', esv: msg['esv'], data: msg['data'] });
			out({ event: 'done' });
			process.exit(0);
		});
	});
});
