#!/usr/bin/env node
// The Node driver's script runner of rwproxy's differential harness (tests/differential).
//
// Runs every scenario file given on the command line with mysql2 and writes a transcript of what
// the application sees, one JSON object per line on stdout (format: ../runners/README.md): values
// with their JavaScript types, column definitions (MariaDB extended metadata included: mysql2
// negotiates MARIADB_CLIENT_EXTENDED_METADATA when the server offers it), the OK packet's fields
// (affected rows, insert id, warning count, status flags, info, session-state changes: mysql2
// negotiates CLIENT_SESSION_TRACK), errors. One process runs all scenarios; a `sync` step asks the
// harness (a line on stdout) and waits for "ok" on stdin.
'use strict';

const fs = require('fs');
const os = require('os');
const path = require('path');
const readline = require('readline');
const mysql = require('mysql2');

// A reply that never comes becomes an error in the transcript (the harness sets the timeout).
const READ_TIMEOUT_MS = Math.round(1000 * Number(process.env.RWPROXY_DIFF_READ_TIMEOUT || '5'));

function parseArgs(argv) {
  const a = { host: '127.0.0.1', scenarios: [] };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    if (k.startsWith('--')) a[k.slice(2)] = argv[++i];
    else a.scenarios.push(k);
  }
  return a;
}

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

const stdinLines = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();

async function barrier(action) {
  emit({ type: 'barrier', action });
  const { value } = await stdinLines.next();
  if (!value || value.trim() !== 'ok') throw new Error('harness did not answer a barrier');
}

function sortKeys(v) {
  if (Array.isArray(v)) return v.map(sortKeys);
  if (v && typeof v === 'object' && v.constructor === Object) {
    const o = {};
    for (const k of Object.keys(v).sort()) o[k] = sortKeys(v[k]);
    return o;
  }
  return v;
}

// A value as [type, canonical text]; NULL as null.
function enc(v) {
  if (v === null || v === undefined) return null;
  if (Buffer.isBuffer(v)) return ['Buffer', v.toString('hex')];
  if (v instanceof Date) return ['Date', isNaN(v.getTime()) ? 'Invalid Date' : v.toISOString()];
  if (typeof v === 'bigint') return ['bigint', v.toString()];
  if (typeof v === 'object') return [v.constructor ? v.constructor.name : 'object', JSON.stringify(sortKeys(v))];
  return [typeof v, String(v)];
}

function column(f) {
  return {
    catalog: f.catalog, schema: f.schema, table: f.table, orgTable: f.orgTable, name: f.name, orgName: f.orgName,
    characterSet: f.characterSet, encoding: f.encoding, columnLength: f.columnLength, type: f.columnType,
    flags: f.flags, decimals: f.decimals, extendedTypeName: f.extendedTypeName ?? null, extendedFormat: f.extendedFormat ?? null,
  };
}

function okPacket(h) {
  return {
    affectedRows: h.affectedRows, insertId: h.insertId, warningStatus: h.warningStatus, serverStatus: h.serverStatus,
    info: h.info, changedRows: h.changedRows, stateChanges: h.stateChanges ?? null,
  };
}

function error(e) {
  const out = { code: e.errno ?? null, sqlstate: e.sqlState ?? null, message: e.sqlMessage ?? e.message, name: e.code ?? null, fatal: !!e.fatal };
  // The runner's own mistake (not mysql2's answer): the harness refuses such a baseline.
  if ((e instanceof TypeError || e instanceof ReferenceError) && e.code === undefined) out.runner_bug = true;
  return out;
}

function paramValue([kind, text]) {
  if (text === null || kind === 'null') return null;
  switch (kind) {
    case 'int': return Number.isSafeInteger(Number(text)) ? Number(text) : BigInt(text);
    case 'float': return Number(text);
    case 'decimal': return text;
    case 'str': return text;
    case 'bytes': return Buffer.from(text, 'hex');
    case 'bool': return text === 'true';
    case 'date': return text;
    case 'datetime': return text;
    case 'time': {
      const s = Number(text), sign = s < 0 ? '-' : '', a = Math.abs(s);
      const h = Math.floor(a / 3600), m = Math.floor((a % 3600) / 60), sec = a % 60;
      return `${sign}${h}:${String(m).padStart(2, '0')}:${sec.toFixed(6).padStart(9, '0')}`;
    }
    default: throw new Error(`unknown parameter type ${kind}`);
  }
}

// mysql2 reports one statement's reply as (rows, fields) and a multi-statement's as arrays of them.
function results(rows, fields) {
  const one = (r, f) => (Array.isArray(r)
    ? { columns: (f || []).map(column), rows: r.map((row) => row.map(enc)) }
    : okPacket(r));
  const multi = Array.isArray(fields) && fields.length > 0 && (Array.isArray(fields[0]) || fields[0] === undefined)
    || (Array.isArray(rows) && rows.length > 0 && !Array.isArray(fields) && !Array.isArray(rows[0]) && rows[0] && rows[0].constructor && rows[0].constructor.name === 'ResultSetHeader');
  if (multi) return rows.map((r, i) => one(r, fields ? fields[i] : undefined));
  return [one(rows, fields)];
}

function call(fn) {
  return new Promise((resolve) => {
    try {
      fn((err, rows, fields) => resolve(err ? { error: error(err) } : { results: results(rows, fields) }));
    } catch (e) {
      resolve({ error: error(e) });
    }
  });
}

class Runner {
  constructor(args, tmpdir) {
    this.args = args;
    this.tmpdir = tmpdir;
    this.conns = {};
    this.threadIds = {};
  }

  file() { return path.join(this.tmpdir, 'load.txt'); }

  connect(conn, s) {
    const o = s.options || {};
    const cfg = {
      host: this.args.host, port: Number(this.args.port), user: o.user || this.args.user,
      password: o.password || this.args.password, database: s.database, multipleStatements: true,
      connectTimeout: 10000, infileStreamFactory: (p) => fs.createReadStream(p),
    };
    if (o.handshake_collation) cfg.charset = o.handshake_collation.toUpperCase();
    else if (o.charset === 'latin1') cfg.charset = 'LATIN1_SWEDISH_CI';
    // mysql2 sets CLIENT_IGNORE_SPACE by default: every connection has it, asked for or not.
    return new Promise((resolve) => {
      const c = mysql.createConnection(cfg);
      c.on('error', () => {}); // a killed or lost connection shows up in the next step's result
      c.connect((err) => {
        if (err) return resolve({ error: error(err) });
        this.conns[conn] = c;
        this.threadIds[conn] = c.threadId;
        resolve({ connected: true, thread_id: c.threadId });
      });
    });
  }

  query(c, sql) {
    return call((cb) => c.query({ sql, rowsAsArray: true, timeout: READ_TIMEOUT_MS }, cb));
  }

  async step(op, conn, s) {
    if (op === 'sync') { await barrier('sync'); return {}; }
    if (op === 'sleep') { await new Promise((r) => setTimeout(r, s.seconds * 1000)); return {}; }
    if (op === 'connect') return this.connect(conn, s);
    const c = this.conns[conn];
    if (!c) return { error: { message: `no open connection '${conn}'` } };
    const file = this.file();
    switch (op) {
      case 'query': return this.query(c, s.sql.replaceAll('{file}', file));
      case 'load_data':
        fs.writeFileSync(file, s.content);
        return this.query(c, s.sql.replaceAll('{file}', file));
      case 'prepared': {
        const runs = s.runs || [s.params || []];
        const out = [];
        for (const params of runs) {
          out.push(await call((cb) => c.execute({ sql: s.sql, values: params.map(paramValue), rowsAsArray: true, timeout: READ_TIMEOUT_MS }, cb)));
        }
        return { binary_protocol: true, runs: out };
      }
      case 'cursor': return { unsupported: 'mysql2 has no server-side cursor API' };
      case 'connection_id': {
        const r = await this.query(c, 'SELECT CONNECTION_ID()');
        const got = r.error ? null : Number(r.results[0].rows[0][0][1]);
        return { "CONNECTION_ID() equals the handshake's connection id": got === this.threadIds[conn] };
      }
      case 'kill': {
        const sql = (s.sql || 'KILL {id}').replaceAll('{id}', String(this.threadIds[s.target]));
        return this.query(c, sql);
      }
      case 'change_user':
        return call((cb) => c.changeUser({ user: s.user, password: s.password, database: s.database }, (err) => cb(err, { affectedRows: 0 })))
          .then((r) => (r.error ? r : { ok: true }));
      case 'reset_connection':
        return call((cb) => c.reset((err) => cb(err, {}))).then((r) => (r.error ? r : { ok: true }));
      case 'init_db':
        return { unsupported: 'mysql2 has no COM_INIT_DB API' };
      case 'ping':
        return call((cb) => c.ping((err) => cb(err, {}))).then((r) => (r.error ? r : { ok: true }));
      case 'close':
        delete this.conns[conn];
        return new Promise((resolve) => c.end((err) => resolve(err ? { error: error(err) } : { closed: true })));
      default:
        return { unsupported: `unknown op ${op}` };
    }
  }

  async runScenario(sc) {
    for (let i = 0; i < sc.steps.length; i++) {
      const s = sc.steps[i];
      const conn = s.conn || 'a';
      const t0 = process.hrtime.bigint();
      let out;
      let timer;
      // Every step ends: a command the driver itself puts no timeout on (COM_CHANGE_USER,
      // COM_RESET_CONNECTION, COM_PING, COM_QUIT) is cut after the read timeout, and that
      // connection is destroyed, as a query's timeout would.
      const hang = new Promise((resolve) => {
        timer = setTimeout(() => resolve({ hang: `no reply within ${READ_TIMEOUT_MS} ms` }), READ_TIMEOUT_MS + 1000);
      });
      try {
        const work = this.step(s.op, conn, s);
        out = await (s.op === 'sync' || s.op === 'sleep' ? work : Promise.race([work, hang]));
      } catch (e) {
        out = { error: error(e) };
      } finally {
        clearTimeout(timer);
      }
      if (out && out.hang && this.conns[conn]) {
        this.conns[conn].destroy();
        delete this.conns[conn];
      }
      emit({ type: 'step', scenario: sc.name, index: i, op: s.op, conn, out, elapsed: Number(process.hrtime.bigint() - t0) / 1e9 });
    }
    for (const name of Object.keys(this.conns)) {
      const c = this.conns[name];
      delete this.conns[name];
      c.destroy();
    }
  }
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const tmpdir = fs.mkdtempSync(path.join(os.tmpdir(), 'rwproxy-diff-node-'));
  try {
    const r = new Runner(args, tmpdir);
    for (const p of args.scenarios) await r.runScenario(JSON.parse(fs.readFileSync(p, 'utf8')));
    emit({ type: 'done' });
  } finally {
    fs.rmSync(tmpdir, { recursive: true, force: true });
  }
  process.exit(0);
}

main().catch((e) => {
  process.stderr.write(`runner failed: ${e && e.stack}\n`);
  process.exit(1);
});
