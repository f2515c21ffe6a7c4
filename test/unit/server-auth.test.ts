// The pure parts of authentication and exposure: the tokens file, what each method requires, and
// which listen addresses count as loopback.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { Metadata, status } from '@grpc/grpc-js'
import { checkCall, parseTokens, requirementOf, roleOf } from '../../src/server/auth.js'
import { checkExposure, isLoopbackHost } from '../../src/server/transport.js'

test('a tokens file: roles, comments, blank lines, and errors that name the line only', () => {
  const table = parseTokens('# team tokens\n\nread:aaa\n  write:bbb  \r\nadmin:c:c#c\n', 'tokens')
  assert.equal(roleOf(table, 'aaa'), 'read')
  assert.equal(roleOf(table, 'bbb'), 'write')
  assert.equal(roleOf(table, 'c:c#c'), 'admin')
  assert.equal(roleOf(table, 'aa'), undefined)
  assert.throws(() => parseTokens('read:x\nroot:secret1\n', 'f'), /^Error: f line 2: expected <role>:<token>/)
  assert.throws(() => parseTokens('read:has space\n', 'f'), /f line 1: the token must be non-empty/)
  assert.throws(() => parseTokens('read:\n', 'f'), /f line 1/)
  assert.throws(() => parseTokens('read:dup\nadmin:dup\n', 'f'), /f line 2: this token is listed before/)
  assert.throws(() => parseTokens('# nothing\n', 'f'), /f holds no tokens/)
  for (const text of ['root:secret1\n', 'read:has space\n']) {
    assert.throws(
      () => parseTokens(text, 'f'),
      (err: Error) => !err.message.includes('secret1') && !err.message.includes('has space'),
    )
  }
})

test('each method requires its role; health and reflection are open; the unknown needs admin', () => {
  const cases: [string, string][] = [
    ['/grpc.health.v1.Health/Check', 'open'],
    ['/grpc.reflection.v1.ServerReflection/ServerReflectionInfo', 'open'],
    ['/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo', 'open'],
    ['/v3storage.v1.QueryService/Query', 'read'],
    ['/v3storage.v1.QueryService/QueryStream', 'read'],
    ['/v3storage.v1.StreamService/Subscribe', 'read'],
    ['/v3storage.v1.ClusterService/Locate', 'read'],
    ['/v3storage.v1.WriteService/Write', 'write'],
    ['/v3storage.v1.WriteService/WriteStream', 'write'],
    ['/v3storage.v1.StreamService/Ingest', 'write'],
    ['/v3storage.v1.AdminService/Compact', 'admin'],
    ['/v3storage.v1.ClusterService/Repair', 'admin'],
    ['/v3storage.v1.SomeFutureService/Do', 'admin'],
  ]
  for (const [path, want] of cases) assert.equal(requirementOf(path), want, path)
})

test('checkCall: missing, malformed, unknown, too weak, and enough', () => {
  const table = parseTokens('read:r1\nwrite:w1\n', 't')
  const md = (value?: string): Metadata => {
    const m = new Metadata()
    if (value !== undefined) m.set('authorization', value)
    return m
  }
  const write = '/v3storage.v1.WriteService/Write'
  assert.equal(checkCall(table, write, md())?.code, status.UNAUTHENTICATED)
  assert.equal(checkCall(table, write, md('Basic w1'))?.code, status.UNAUTHENTICATED)
  assert.equal(checkCall(table, write, md('Bearer nope'))?.code, status.UNAUTHENTICATED)
  assert.equal(checkCall(table, write, md('Bearer r1'))?.code, status.PERMISSION_DENIED)
  assert.equal(checkCall(table, write, md('Bearer w1')), undefined)
  assert.equal(checkCall(table, write, md('bearer w1')), undefined)
  assert.equal(checkCall(table, '/grpc.health.v1.Health/Check', md()), undefined)
})

test('loopback addresses, and the refusal to expose anything else bare', () => {
  for (const host of ['127.0.0.1', '127.1.2.3', 'localhost', 'LOCALHOST', '[::1]', '::1', '[::ffff:127.0.0.1]']) {
    assert.ok(isLoopbackHost(host), host)
  }
  for (const host of ['0.0.0.0', '[::]', '10.0.0.5', 'db.example', '128.0.0.1', '127.0.0.1.example']) {
    assert.ok(!isLoopbackHost(host), host)
  }
  const base = { host: '0.0.0.0', listen: '0.0.0.0:1', tls: false, tokens: false, insecure: false }
  assert.throws(() => checkExposure(base), /add TLS \(--tls-cert and --tls-key\) and bearer tokens \(--tokens-file\)/)
  assert.throws(() => checkExposure({ ...base, tls: true }), /add bearer tokens \(--tokens-file\), or pass --insecure/)
  assert.equal(checkExposure({ ...base, tls: true, tokens: true }), undefined)
  assert.match(checkExposure({ ...base, insecure: true }) ?? '', /because --insecure was given/)
  assert.equal(checkExposure({ ...base, host: '127.0.0.1' }), undefined)
})
