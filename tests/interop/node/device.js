'use strict';
// The npm `echonet-lite` package as a DEVICE node, for amistack's controller to find and drive.
//
// usage: node device.js LOCAL_IP [LIFETIME_MS]
//
// Run inside the network namespace tests/interop/test_echonet_npm.py creates (the package binds
// 0.0.0.0:3610, joins 224.0.23.0 and multicasts its startup INF of D5). The package answers for
// its node profile by itself; for the device objects it hosts -- a low-voltage smart electric
// energy meter 0x028801 and a temperature sensor 0x001101 -- this script hands Get/Set requests
// to the package's replyGetDetail/replySetDetail with the values below, and keeps a written E5
// (the package accepts a Set of a property it has, but leaves storing the value to the
// application). Prints {"event": "ready", "details": ...} once initialised, then one JSON line per
// frame received, and exits when stdin closes or after LIFETIME_MS.

const EL = require('echonet-lite');

const [local, lifetimeArg] = process.argv.slice(2);
const LIFETIME_MS = Number(lifetimeArg || 20000);
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');

// A property map: a list below 16 EPCs, else the 16-byte bitmap (ECHONET Lite part 2, annex 1).
function propMap(epcs) {
	if (epcs.length < 16) { return [epcs.length].concat(epcs); }
	const bits = new Array(16).fill(0);
	for (const e of epcs) { bits[e & 0x0f] |= 1 << ((e >> 4) - 8); }
	return [epcs.length].concat(bits);
}

const super_ = {
	'80': [0x30], // operation status: on
	'81': [0x00], // installation location
	'82': [0x00, 0x00, 0x4a, 0x00], // APPENDIX release J
	'83': [0xfe, 0x00, 0x00, 0x77, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d],
	'88': [0x42], // fault status: none
	'8a': [0x00, 0x00, 0x77], // manufacturer code
};

const meterEpcs = [0x80, 0x81, 0x82, 0x83, 0x88, 0x8a, 0x9d, 0x9e, 0x9f, 0xd3, 0xd7, 0xe0, 0xe1, 0xe5, 0xe7, 0xe8];
const sensorEpcs = [0x80, 0x81, 0x82, 0x83, 0x88, 0x8a, 0x9d, 0x9e, 0x9f, 0xe0];

const details = {
	'028801': Object.assign({}, super_, {
		'9d': propMap([0x80, 0x81, 0x88]),
		'9e': propMap([0x81, 0xe5]),
		'9f': propMap(meterEpcs), // 16 EPCs: sent as a bitmap
		'd3': [0x00, 0x00, 0x00, 0x01], // coefficient 1
		'd7': [0x06], // 6 effective digits
		'e0': [0x00, 0x01, 0xe2, 0x40], // 123456 x 0.1 kWh
		'e1': [0x01], // unit 0.1 kWh
		'e5': [0x00], // history day
		'e7': [0x00, 0x00, 0x05, 0xdc], // 1500 W
		'e8': [0x00, 0x3c, 0x00, 0x32], // R 6.0 A, T 5.0 A
	}),
	'001101': Object.assign({}, super_, {
		'9d': propMap([0x80, 0x81, 0x88]),
		'9e': propMap([0x81]),
		'9f': propMap(sensorEpcs),
		'e0': [0x00, 0xdc], // 22.0 degC
	}),
};

async function main() {
	setTimeout(() => { EL.release(); process.exit(0); }, LIFETIME_MS);
	process.stdin.on('end', () => { EL.release(); process.exit(0); });
	process.stdin.resume();
	const sock = await EL.initialize(Object.keys(details), (rinfo, els, err) => {
		if (err) { out({ event: 'error', error: String(err) }); return; }
		out({
			event: 'rx', from: rinfo.address, port: rinfo.port,
			els: { TID: els.TID, SEOJ: els.SEOJ, DEOJ: els.DEOJ, ESV: els.ESV, DETAILs: els.DETAILs },
		});
		if (!details[els.DEOJ]) { return; } // the node profile is answered by the package
		switch (els.ESV) {
			case EL.GET:
				EL.replyGetDetail(rinfo, els, details);
				break;
			case EL.SETI:
			case EL.SETC:
				EL.replySetDetail(rinfo, els, details);
				// the application's part of a write: keep what the package accepted
				for (const epc in els.DETAILs) {
					if (els.DEOJ === '028801' && epc === 'e5') {
						const v = parseInt(els.DETAILs[epc], 16);
						if (v <= 99) { details['028801'].e5 = [v]; }
					}
				}
				break;
			default:
				break;
		}
	}, 4, { v4: local, ignoreMe: true, autoGetProperties: false, debugMode: false });
	// initialize() returns before the socket is bound and has joined 224.0.23.0 (that happens
	// in its 'listening' handler): only then can a multicast request reach us
	await new Promise((resolve) => {
		try { sock.address(); setImmediate(resolve); } catch (e) { sock.once('listening', () => setImmediate(resolve)); }
	});
	out({ event: 'ready', details: Object.keys(details) });
}

main().catch((e) => { out({ event: 'failed', error: String(e && e.stack || e) }); process.exit(2); });
