'use strict';
// The npm `echonet-lite` package as the controller of amistack's smart-meter node.
//
// usage: node controller.js METER_IP LOCAL_IP [TIMEOUT_MS]
//
// Run inside the network namespace tests/interop/test_echonet_npm.py creates (the package binds
// 0.0.0.0:3610 and joins 224.0.23.0). Steps:
//   1. EL.search(): multicast Get of D6/83/9D/9E/9F to 0EF001; with autoGetProperties the package
//      then crawls our node by itself: property maps of every instance in D6, then a Get of every
//      EPC of the get map (requests from SEOJ 0EF001);
//   2. Get of E7, E0, E1, D3 from a controller object (05FF01);
//   3. SetC of E5 = 1, then Get of E2 (yesterday's 48 half-hour values);
//   4. SetC of E5 = 100 (out of range: expect SetC_SNA).
// Every frame received is printed as one JSON line ({"event": "rx", ...}); the last line is
// {"event": "done", "facilities": EL.facilities} (the package's view of the network), or
// {"event": "timeout", ...}.

const EL = require('echonet-lite');

const [meter, local, timeoutArg] = process.argv.slice(2);
const TIMEOUT_MS = Number(timeoutArg || 10000);
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');
const received = [];

function tidOf(arr) {
	return arr.map((b) => b.toString(16).padStart(2, '0')).join('');
}

function waitFor(pred, what, ms = 4000) {
	return new Promise((resolve, reject) => {
		const start = Date.now();
		const poll = () => {
			const hit = pred();
			if (hit) { resolve(hit); return; }
			if (Date.now() - start > ms) { reject(new Error('timed out waiting for ' + what)); return; }
			setTimeout(poll, 10);
		};
		poll();
	});
}

const answerTo = (tid) => waitFor(
	() => received.find((r) => r.els.TID === tid && r.from === meter),
	'the answer to TID ' + tid);

async function main() {
	setTimeout(() => { out({ event: 'timeout', facilities: EL.facilities }); process.exit(3); }, TIMEOUT_MS);
	const sock = await EL.initialize(['05ff01'], (rinfo, els, err) => {
		if (err) { out({ event: 'error', error: String(err) }); return; }
		const r = {
			from: rinfo.address,
			port: rinfo.port,
			els: { TID: els.TID, SEOJ: els.SEOJ, DEOJ: els.DEOJ, ESV: els.ESV, DETAILs: els.DETAILs },
		};
		received.push(r);
		out(Object.assign({ event: 'rx' }, r));
	}, 4, { v4: local, ignoreMe: true, autoGetProperties: true, autoGetDelay: 20, debugMode: false });

	// initialize() returns before its socket is bound (answers come to port 3610)
	await new Promise((resolve) => {
		try { sock.address(); setImmediate(resolve); } catch (e) { sock.once('listening', () => setImmediate(resolve)); }
	});
	EL.search();
	// the crawl is done once the package holds a value for every EPC of the meter's get map
	await waitFor(() => {
		const dev = (EL.facilities[meter] || {})['028801'];
		if (!dev || !dev['9f'] || !dev['e7']) { return false; }
		const epcs = dev['9f'].match(/.{2}/g).slice(1);
		return epcs.every((e) => dev[e] !== undefined);
	}, 'the automatic crawl of the meter', 6000);

	const ctl = '05ff01';
	let tid = tidOf(await EL.sendDetails(meter, ctl, '028801', EL.GET, [{ e7: '' }, { e0: '' }, { e1: '' }, { d3: '' }]));
	out({ event: 'get', tid: tid, answer: (await answerTo(tid)).els });

	tid = tidOf(EL.sendOPC1(meter, ctl, '028801', EL.SETC, 'e5', [0x01]));
	out({ event: 'set_e5', tid: tid, answer: (await answerTo(tid)).els });

	tid = tidOf(await EL.sendDetails(meter, ctl, '028801', EL.GET, { e2: '' }));
	out({ event: 'get_e2', tid: tid, answer: (await answerTo(tid)).els });

	tid = tidOf(EL.sendOPC1(meter, ctl, '028801', EL.SETC, 'e5', [0x64]));
	out({ event: 'set_e5_out_of_range', tid: tid, answer: (await answerTo(tid)).els });

	out({ event: 'done', facilities: EL.facilities });
	EL.release();
	process.exit(0);
}

main().catch((e) => { out({ event: 'failed', error: String(e && e.stack || e), facilities: EL.facilities }); process.exit(2); });
