/**
 * Leader election through a Consul session lock, after Consul's application leader election recipe:
 * each candidate holds a session with a TTL, renews it, and tries to acquire `<cluster>/leader` with
 * it; the one that gets the key leads until its session ends or it lets go, while the others wait on
 * the key with blocking queries and try again once it is free.
 *
 * The term is the key's LockIndex. Consul bumps it each time a new session acquires the key, so it
 * grows with every change of leader and two leaders never share one: work stamped with a term can be
 * fenced against a newer leader's, and {@link LeaderElection.stillLeads} checks a term against Consul.
 *
 * A leader stops leading (its term's signal aborts) as soon as it sees any of:
 * - its blocking watch of the key shows another session, or none, or the key gone;
 * - a renewal answers 404: Consul invalidated the session (TTL, destroy), which released the key;
 * - ttlMs has passed since it sent its last renewal that succeeded, whatever the reason (Consul
 *   unreachable, say). Consul never expires a session sooner than TTL after a renewal, and refuses the
 *   key to everyone for the lock-delay after that, so the old leader has stopped before a new one can
 *   start, provided the clocks run at roughly the same rate.
 * After a loss the node releases the key, destroys the session and campaigns with a new one.
 *
 * Nothing of ours deletes the key: a key created anew starts its LockIndex at 1 again, and terms would
 * repeat. A Consul that lost its data (a dev agent restarted) does just that, so a candidate takes a
 * term only above the highest term its node has seen ({@link LeaderConfig.termFloor}): while the
 * LockIndex it acquired is not above that, it releases the key and acquires it again, which bumps the
 * LockIndex by one each time. Without that, every ring change of the new leader would be fenced as
 * an older leader's.
 * The client stays the caller's; stop does not close it.
 */
import type { Logger } from '../engine/config.js'
import { bug, UnavailableError, ValidationError } from '../model/errors.js'
import { type Blocking, type ConsulClient, ConsulError, type KvPair } from './consul-client.js'
import { backoff, errorMessage, sleep } from './pause.js'

export interface LeaderOptions {
  /**
   * ttlMs is the TTL of the candidate's Consul session, renewed every ttlMs/3; a leader that has not
   * renewed it for ttlMs gives up its term. Consul refuses TTLs below 10 s; the emulator does not.
   */
  readonly ttlMs: number
  /**
   * lockDelayMs is the session's lock-delay: after Consul invalidates a leader's session, it refuses
   * the key to everyone for this long, so that the old leader notices before a new one starts.
   */
  readonly lockDelayMs: number
}

/** Who campaigns, and for which cluster. */
export interface LeaderConfig {
  readonly clusterName: string
  readonly selfId: string
  /**
   * The highest leader term this node has seen (in the lock and in the ring it accepted); a term
   * taken is always above what it answered just before the acquire. Absent: 0.
   */
  readonly termFloor?: () => number
  /** Whether this node may take the lock now; asked before each attempt. Absent: always. */
  readonly mayLead?: () => boolean
}

export const LEADER_DEFAULTS: LeaderOptions = Object.freeze({ ttlMs: 10_000, lockDelayMs: 5_000 })

/** A term this node leads: its number is the lock key's LockIndex; signal aborts when the lock is lost. */
export interface Term {
  readonly term: number
  readonly signal: AbortSignal
}

/** Retries of an acquire that Consul refused during a lock-delay. */
const LOCK_RETRY_MIN_MS = 50
const LOCK_RETRY_MAX_MS = 2000
/** How often a candidate that may not lead yet (LeaderConfig.mayLead) asks again. */
const NOT_ELIGIBLE_POLL_MS = 500
/** Retries after a failed Consul call. */
const ERROR_RETRY_MIN_MS = 200
const ERROR_RETRY_MAX_MS = 5000
/**
 * The `wait` of the blocking queries on the key. A change answers them at once, so this only bounds
 * how long a dead connection goes unnoticed; the leader's safety rests on the session TTL, not on it.
 */
const WATCH_WAIT_MS = 30_000
const ID_PATTERN = /^[^\s/]+$/
const NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/

/** The term this node leads, with what ends it. */
interface Lead {
  readonly term: Term
  readonly controller: AbortController
  /** Fires ttlMs after the last renewal that succeeded was sent. */
  lease: NodeJS.Timeout | undefined
}

/** One session's life: created, renewed, used to campaign and perhaps lead, then retired. */
interface Candidacy {
  readonly session: string
  /** Aborted when the session is no longer to be used: it was lost, or the election stops. */
  readonly ended: AbortController
  /** Cancels the candidacy's Consul calls when it ends or the election stops. */
  readonly signal: AbortSignal
  /**
   * renewedAt is when the last renewal that succeeded (or the creation) was sent, on the monotonic
   * clock: Consul keeps the session at least ttlMs past the moment it handled that request, which is later.
   */
  renewedAt: number
  renewTimer: NodeJS.Timeout | undefined
  renewing: Promise<void> | undefined
  lead: Lead | undefined
}

function positiveInt(field: string, value: number): number {
  if (!Number.isSafeInteger(value) || value <= 0) {
    throw ValidationError.field(field, `must be a positive integer, not ${value}`)
  }
  return value
}

/**
 * Time for leases, from the monotonic clock: a wall-clock step must neither stretch a lease past the
 * session's TTL nor cut it short.
 */
function monotonic(): number {
  return performance.now()
}

/**
 * Whether Consul refused a lock request because the session no longer exists. Consul answers that
 * with a 500, which would otherwise read as an outage.
 */
function isInvalidSession(err: unknown): boolean {
  return err instanceof ConsulError && err.statusCode === 500 && /invalid session/i.test(err.message)
}

/** The next blocking query's index: Consul's advice is to start over when an index goes backwards. */
function nextIndex(previous: number, answered: number): number {
  return answered < previous ? 0 : Math.max(answered, 1)
}

export class LeaderElection {
  private readonly key: string
  private readonly value: string
  private readonly sessionName: string
  private readonly termFloor: () => number
  private readonly mayLead: () => boolean
  private readonly options: LeaderOptions
  private readonly abort = new AbortController()
  private started = false
  private stopped = false
  private stopping: Promise<void> | undefined
  private loop: Promise<void> | undefined
  private candidacy: Candidacy | undefined
  private readonly listeners: ((term: Term) => void)[] = []
  /** Consul calls failed in a row, for the backoff. */
  private failures = 0
  /** Whether the last failure was an outage not yet followed by an answer, to log an outage once. */
  private unreachable = false

  constructor(
    private readonly client: ConsulClient,
    config: LeaderConfig,
    options: LeaderOptions,
    private readonly logger: Logger,
  ) {
    if (!NAME_PATTERN.test(config.clusterName)) {
      throw ValidationError.field(
        'clusterName',
        'must start with a letter or digit and hold only letters, digits, _ . -',
      )
    }
    if (!ID_PATTERN.test(config.selfId)) throw ValidationError.field('selfId', 'must be non-empty, without / or spaces')
    this.options = Object.freeze({
      ttlMs: positiveInt('ttlMs', options.ttlMs),
      lockDelayMs: positiveInt('lockDelayMs', options.lockDelayMs),
    })
    this.key = `${config.clusterName}/leader`
    this.value = JSON.stringify({ node: config.selfId })
    this.sessionName = `${config.clusterName} leader ${config.selfId}`
    this.termFloor = config.termFloor ?? (() => 0)
    this.mayLead = config.mayLead ?? (() => true)
  }

  /** Starts campaigning in the background, until {@link stop}. */
  start(): void {
    if (this.started) throw bug('LeaderElection.start called twice')
    this.started = true
    this.loop = this.run()
  }

  /**
   * Stops campaigning and ends every loop. A leader ends its term first, then releases the key (so the
   * next leader need not wait out a lock-delay) and destroys its session. Never throws.
   */
  stop(): Promise<void> {
    this.stopping ??= this.shutdown()
    return this.stopping
  }

  /** The term this node leads now, or undefined. */
  current(): Term | undefined {
    return this.candidacy?.lead?.term
  }

  /** Calls `listener` each time this node starts leading a term; a term led already is not replayed. */
  onElected(listener: (term: Term) => void): void {
    this.listeners.push(listener)
  }

  /**
   * Whether this node still holds the lock now: a consistent read of the key whose Session is this
   * node's session and whose LockIndex is `term`. A read that shows otherwise ends the term at once.
   * Throws a {@link ConsulError} when Consul cannot answer: whether the term holds is then unknown.
   */
  async stillLeads(term: Term): Promise<boolean> {
    const c = this.candidacy
    const lead = c?.lead
    if (!c || !lead || lead.term !== term) return false
    const pair = await this.client.kvGet(this.key, this.abort.signal)
    if (c.lead !== lead) return false
    if (pair?.session === c.session && pair.lockIndex === term.term) return true
    this.lose(c, this.lossReason(pair))
    return false
  }

  /**
   * Gives up term `term` at once, when the leader finds it may not act (see LeaderConfig.mayLead):
   * the term ends, the key is released and the session destroyed, and the node campaigns again with
   * a new session, which waits while mayLead says no. Another term is left alone.
   */
  resign(term: Term, reason: string): void {
    const c = this.candidacy
    if (!c || c.lead?.term !== term) return
    this.endTerm(c, `this node stepped down as the leader: ${reason}`)
    this.logger.warn({ term: term.term, reason }, 'this node steps down as the leader')
    c.ended.abort()
  }

  // ---- the campaign ----

  /** One candidacy after another until stop. Never throws. */
  private async run(): Promise<void> {
    try {
      while (!this.stopped) {
        const c = await this.openCandidacy()
        // Stopped meanwhile: stop() retires the candidacy once this loop has returned.
        if (!c || this.stopped) return
        await this.campaign(c)
        await this.closeCandidacy(c)
        if (this.stopped) return
        await this.retire(c, true)
        // A retire that stop cut short is tried once more by stop, which needs the candidacy for that.
        if (this.stopped) return
        this.candidacy = undefined
      }
    } catch (err) {
      this.logger.error({ err: errorMessage(err) }, 'BUG: the leader election loop failed')
    }
  }

  /** Creates a session and starts renewing it; retries while Consul fails; undefined once stopped. */
  private async openCandidacy(): Promise<Candidacy | undefined> {
    const { ttlMs, lockDelayMs } = this.options
    while (!this.stopped) {
      const sentAt = monotonic()
      let session: string
      try {
        session = await this.client.createSession({ name: this.sessionName, ttlMs, lockDelayMs }, this.abort.signal)
      } catch (err) {
        if (this.stopped) return undefined
        this.failed(err, 'create a session')
        await sleep(backoff(this.failures, ERROR_RETRY_MIN_MS, ERROR_RETRY_MAX_MS), this.abort.signal)
        continue
      }
      this.succeeded()
      const ended = new AbortController()
      const c: Candidacy = {
        session,
        ended,
        signal: AbortSignal.any([this.abort.signal, ended.signal]),
        renewedAt: sentAt,
        renewTimer: undefined,
        renewing: undefined,
        lead: undefined,
      }
      this.candidacy = c
      this.scheduleRenew(c)
      return c
    }
    return undefined
  }

  /** Stops renewing the candidacy's session; it has ended. */
  private async closeCandidacy(c: Candidacy): Promise<void> {
    clearTimeout(c.renewTimer)
    await c.renewing
  }

  /**
   * Campaigns and then leads with one session, until the candidacy ends (loss or stop). A failed call
   * is retried with backoff; meanwhile a leader keeps its term only as long as its lease runs.
   */
  private async campaign(c: Candidacy): Promise<void> {
    while (!c.signal.aborted) {
      try {
        if (!c.lead) {
          const term = await this.acquire(c)
          if (term === undefined) return
          this.elect(c, term)
          continue
        }
        await this.watchWhileLeading(c, c.lead)
      } catch (err) {
        if (c.signal.aborted) return
        if (isInvalidSession(err)) {
          this.lose(c, 'Consul no longer knows its session')
          return
        }
        this.failed(err, c.lead ? 'watch the leader key' : 'acquire the leader key')
        await sleep(backoff(this.failures, ERROR_RETRY_MIN_MS, ERROR_RETRY_MAX_MS), c.signal)
      }
    }
  }

  /**
   * Acquires the key with the candidacy's session and returns the term, its LockIndex, once that is
   * above the term floor; undefined when the candidacy ends first. While another session holds the key it waits on a blocking query; when
   * the key is free and Consul still refuses, a lock-delay is in effect.
   */
  private async acquire(c: Candidacy): Promise<number | undefined> {
    /** When this node last saw the key become free: the lock-delay, if any, began no later. */
    let freedAt = monotonic()
    let refusals = 0
    /** Whether the lock was found below the term floor, and said so. */
    let raising = false
    while (!c.signal.aborted) {
      if (!this.mayLead()) {
        await sleep(NOT_ELIGIBLE_POLL_MS, c.signal)
        continue
      }
      // Read before the acquire: the node may see the LockIndex this acquire makes (its membership
      // watches the key) before the check below, and a floor that counted it would never be passed.
      const floor = this.termFloor()
      if (await this.client.kvPut(this.key, this.value, { acquire: c.session }, c.signal)) {
        this.succeeded()
        // The acquire's answer carries no LockIndex. A read that still shows this session has it: only
        // an acquire by another session bumps it. Between the two the session may have been lost.
        const pair = await this.client.kvGet(this.key, c.signal)
        if (pair?.session !== c.session) continue
        if (pair.lockIndex > floor) return pair.lockIndex
        if (!raising) {
          raising = true
          this.logger.warn(
            { lockIndex: pair.lockIndex, termSeen: floor },
            'the leader lock starts below the terms this node has seen (Consul lost its data?): taking it again until its index passes them',
          )
        }
        await this.client.kvPut(this.key, this.value, { release: c.session }, c.signal)
        continue
      }
      this.succeeded()
      const { index, pair } = await this.readKey({ index: 0, waitMs: 0 }, c.signal)
      if (pair?.session !== undefined && pair.session !== c.session) {
        await this.waitForRelease(c, index)
        freedAt = monotonic()
        refusals = 0
        continue
      }
      // Consul does not say how much of the lock-delay is left. When the holder's session shares this
      // node's lock-delay, it ends lockDelayMs after the key became free; past that, back off.
      refusals += 1
      const delayLeft = freedAt + this.options.lockDelayMs - monotonic()
      await sleep(Math.max(delayLeft, backoff(refusals, LOCK_RETRY_MIN_MS, LOCK_RETRY_MAX_MS)), c.signal)
    }
    return undefined
  }

  /** Waits with blocking queries until no session holds the key. */
  private async waitForRelease(c: Candidacy, index: number): Promise<void> {
    for (let at = index; ; ) {
      const answer = await this.readKey({ index: at, waitMs: WATCH_WAIT_MS }, c.signal)
      this.succeeded()
      if (answer.pair?.session === undefined) return
      at = nextIndex(at, answer.index)
    }
  }

  /** Watches the key while leading; returns once the key no longer names this term, having lost it. */
  private async watchWhileLeading(c: Candidacy, lead: Lead): Promise<void> {
    for (let at = 0; ; ) {
      const answer = await this.readKey({ index: at, waitMs: WATCH_WAIT_MS }, c.signal)
      this.succeeded()
      // The lease or a renewal may have ended the term while the query waited.
      if (c.lead !== lead) return
      const pair = answer.pair
      if (pair?.session !== c.session || pair.lockIndex !== lead.term.term) {
        this.lose(c, this.lossReason(pair))
        return
      }
      at = nextIndex(at, answer.index)
    }
  }

  /**
   * Reads the key with a blocking query. A recursive read of the full key is what Consul's blocking
   * list serves; it may also return longer keys that start with it, which are skipped.
   */
  private async readKey(blocking: Blocking, signal: AbortSignal): Promise<{ index: number; pair?: KvPair }> {
    const answer = await this.client.kvList(this.key, blocking, signal)
    const pair = answer.value.find((p) => p.key === this.key)
    return pair ? { index: answer.index, pair } : { index: answer.index }
  }

  private lossReason(pair: KvPair | undefined): string {
    if (!pair) return 'the leader key is gone'
    if (pair.session === undefined) return 'no session holds the leader key'
    return 'another session holds the leader key'
  }

  // ---- leading and losing ----

  private elect(c: Candidacy, term: number): void {
    const controller = new AbortController()
    const lead: Lead = { term: Object.freeze({ term, signal: controller.signal }), controller, lease: undefined }
    c.lead = lead
    this.armLease(c, lead)
    // The acquire may have taken longer than the lease (slow answers): armLease has ended the term.
    if (c.lead !== lead) return
    this.logger.info({ term }, 'this node leads the cluster')
    for (const listener of this.listeners) {
      try {
        listener(lead.term)
      } catch (err) {
        this.logger.error({ err: errorMessage(err), term }, 'an onElected listener failed')
      }
    }
  }

  /** Ends the term ttlMs after the last renewal that succeeded was sent; Consul may expire it then. */
  private armLease(c: Candidacy, lead: Lead): void {
    clearTimeout(lead.lease)
    const left = c.renewedAt + this.options.ttlMs - monotonic()
    if (left <= 0) {
      this.lose(c, `its session was not renewed for ${this.options.ttlMs} ms`)
      return
    }
    lead.lease = setTimeout(() => {
      if (c.lead === lead) this.lose(c, `its session was not renewed for ${this.options.ttlMs} ms`)
    }, left)
  }

  /** Ends the candidacy's term, if any, before anything else happens to the key or the session. */
  private endTerm(c: Candidacy, why: string): void {
    const lead = c.lead
    if (!lead) return
    c.lead = undefined
    clearTimeout(lead.lease)
    lead.controller.abort(new UnavailableError(why))
  }

  /** Ends the candidacy: aborts the term it leads, if any, and its calls. The run loop retires it. */
  private lose(c: Candidacy, reason: string): void {
    if (c.lead) {
      this.logger.warn({ term: c.lead.term.term, reason }, 'this node lost the leadership')
      this.endTerm(c, 'this node lost the leadership')
    } else if (!c.ended.signal.aborted) {
      this.logger.warn({ reason }, 'this node’s election session ended; campaigning with a new one')
    }
    c.ended.abort()
  }

  // ---- the session ----

  private scheduleRenew(c: Candidacy): void {
    if (c.signal.aborted) return
    c.renewTimer = setTimeout(() => {
      c.renewing = this.renew(c).finally(() => {
        c.renewing = undefined
        this.scheduleRenew(c)
      })
    }, this.options.ttlMs / 3)
  }

  private async renew(c: Candidacy): Promise<void> {
    const sentAt = monotonic()
    try {
      await this.client.renewSession(c.session, c.signal)
    } catch (err) {
      if (c.signal.aborted) return
      if (err instanceof ConsulError && err.statusCode === 404) {
        // Consul invalidated the session (TTL, destroy), which released the key.
        this.lose(c, 'Consul no longer knows its session')
      } else {
        // The lease, not this error, decides when a leader gives up: the session may well be alive.
        this.failed(err, 'renew the session')
      }
      return
    }
    this.succeeded()
    c.renewedAt = sentAt
    if (c.lead) this.armLease(c, c.lead)
  }

  /**
   * Releases the key, which leaves no lock-delay on it, then destroys the session. Releasing a key
   * the session does not hold changes nothing, so it is always tried: an acquire cancelled in flight
   * may have succeeded. `retry` retries while Consul is unreachable, until stop.
   */
  private async retire(c: Candidacy, retry: boolean): Promise<void> {
    for (;;) {
      try {
        await this.client.kvPut(this.key, this.value, { release: c.session }, retry ? this.abort.signal : undefined)
        await this.client.destroySession(c.session, retry ? this.abort.signal : undefined)
        this.succeeded()
        return
      } catch (err) {
        if (retry && this.stopped) return
        this.failed(err, 'release the leader key and destroy the session')
        if (!retry || !(err instanceof ConsulError && err.outage)) return
        await sleep(backoff(this.failures, ERROR_RETRY_MIN_MS, ERROR_RETRY_MAX_MS), this.abort.signal)
      }
    }
  }

  private async shutdown(): Promise<void> {
    this.stopped = true
    const c = this.candidacy
    // The term ends before the key is released, so that it never overlaps the next leader's.
    if (c?.lead) {
      this.logger.info({ term: c.lead.term.term }, 'this node steps down as the leader')
      this.endTerm(c, 'this node stopped leading: its election is stopping')
    }
    this.abort.abort()
    c?.ended.abort()
    await this.loop
    // The loop may have opened a candidacy after the abort, from a session created just before it.
    const last = this.candidacy
    if (!last) return
    last.ended.abort()
    await this.closeCandidacy(last)
    await this.retire(last, false)
  }

  // ---- Consul's reachability, for logs and the backoff ----

  private succeeded(): void {
    this.failures = 0
    if (!this.unreachable) return
    this.unreachable = false
    this.logger.info({ key: this.key }, 'Consul answers the leader election again')
  }

  private failed(err: unknown, what: string): void {
    this.failures += 1
    const message = errorMessage(err)
    if (!(err instanceof ConsulError && err.outage)) {
      // Consul answered but refused: a bug or a permission problem, not an outage.
      this.logger.error({ err: message, what }, 'Consul refused a leader election request')
    } else if (!this.unreachable) {
      this.unreachable = true
      this.logger.warn({ err: message, what }, 'cannot reach Consul for the leader election; retrying')
    }
  }
}
