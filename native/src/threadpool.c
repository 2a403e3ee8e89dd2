/*
 * The caller publishes a run by writing the task, opening the run's gate and bumping
 * `generation`; workers see the new generation while spinning or after waking on work_cv.
 * A worker takes part only if it gets through the gate before the caller closes it, which the
 * caller does as soon as its own call of the task returns (the task has then no work left to
 * hand out: tasks claim their work dynamically). The caller waits only for the workers that
 * got through. So a worker the OS has not scheduled yet (the machine is busy with other
 * processes) never holds the caller up: it finds the gate closed and skips the run.
 *
 * A run missed by a worker that was polling (or had ample time to wake), or a worker that got
 * through but then kept the caller waiting (it was preempted), is the pool's sign that the
 * machine is busy: the caller then runs the next calls
 * alone for HALO_POOL_BACKOFF_NS and the workers stop spinning, because a spinning worker would
 * take CPU time from the caller's own thread. The next parallel run after the back-off probes
 * again; the back-off grows while probes keep failing.
 *
 * The mutex and condition variables are touched only when a thread actually sleeps: a sleeper
 * announces itself (n_sleeping_workers, caller_sleeping) under the mutex and then re-checks its
 * predicate; the other side changes the predicate and then checks for sleepers, broadcasting
 * under the mutex if there is one. Each side puts a full fence between its write and its read
 * (sequentially consistent operations alone imply it, but emulators such as qemu-user have been
 * seen to reorder a store-release before a load-acquire and lose the wake-up), so at least one
 * of them sees the other's write: either the sleeper sees the new state and does not sleep,
 * or the waker sees the sleeper and wakes it. No wake-up is lost, and back-to-back
 * runs never contend for the mutex (measured on a 2-vCPU VM: taking it on every run put a
 * futex wait of ~65 µs on one run in ten).
 */
#include "threadpool.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

/*
 * Polls this long before blocking, enough to bridge consecutive kernel calls with the engine's
 * TS steps (norms, RoPE, SwiGLU) between them; a sleeping thread takes 10-60 µs to wake on a
 * VM. Bounded by time, not iterations: a `pause` takes ~27 ns on one CPU and ~1 ns on another.
 * Only when the pool fits in the online CPUs: oversubscribed, a spinner burns the timeslice the
 * thread it waits for needs (measured: ~1 ms per run for 3 threads on 2 cores). Spinners never
 * call sched_yield: on a 2-vCPU KVM guest a yield delayed the yielding worker by ~65 µs in one
 * run of ten (back-to-back runs of 5 µs then cost 0.3 µs at the median but 65 µs at p90); the
 * bounded window and the back-off on a busy machine keep other threads from starving.
 */
#define HALO_POOL_SPIN_NS 500000
/* Polls between clock reads (~40 ns each). */
#define HALO_POOL_SPINS_PER_CLOCK 64
/*
 * After a run that a worker missed, the caller runs alone this long, doubled after each probe
 * that fails again up to the maximum: a probe on a busy machine can cost the caller a
 * preempted worker's time slice (milliseconds), so probes must get rarer while the machine stays
 * busy, yet spare CPUs are picked up again within a second after another process stops.
 */
#define HALO_POOL_BACKOFF_NS 20000000
#define HALO_POOL_MAX_BACKOFF_NS 640000000
/*
 * A worker that got through the gate but keeps the caller waiting longer than this, and longer
 * than the caller's own share took, was preempted mid-task: the same sign of a busy machine as
 * a missed run. (Unpreempted stragglers finish within one work item, tens of µs.)
 */
#define HALO_POOL_STRAGGLER_NS 100000
/*
 * A worker that was asleep when the run was published needs this long to wake (10-60 µs on a
 * VM, rarely more): missing a shorter run is no sign of a busy machine.
 */
#define HALO_POOL_WAKE_NS 200000

/* gate = (generation mod 2^32) << 32 | closed << 31 | workers that got through. */
#define GATE_CLOSED ((uint64_t)1 << 31)
#define GATE_JOINED_MASK (GATE_CLOSED - 1)

struct halo_worker {
  struct halo_pool *pool;
  int index;
};

struct halo_pool {
  int n_threads;
  pthread_t *threads;           /* (n_threads - 1) */
  struct halo_worker *workers;  /* (n_threads - 1), indices 1..n_threads-1 */
  int n_started;
  int64_t spin_ns;              /* HALO_POOL_SPIN_NS, or 0 when oversubscribed */
  atomic_int spinning;          /* cleared during a back-off: threads block instead of polling */
  int64_t solo_until_ns;        /* the caller's: run alone until then (0: no back-off) */
  int64_t backoff_ns;           /* the caller's: the next back-off */
  pthread_mutex_t mutex;
  pthread_cond_t work_cv;
  pthread_cond_t done_cv;
  atomic_uint_fast64_t generation;
  atomic_uint_fast64_t gate;
  atomic_int finished;           /* workers through the gate that have finished the task */
  atomic_int stop;
  atomic_int n_sleeping_workers; /* workers blocked (or about to block) on work_cv, or not started */
  atomic_int caller_sleeping;    /* the caller is blocked (or about to block) on done_cv */
  /* The current run; written before `generation` is bumped, stable while a worker is through the gate. */
  halo_task_fn fn;
  void *arg;
  int n_workers;
};

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__) || defined(__arm__)
  __asm__ __volatile__("yield");
#endif
}

static int64_t monotonic_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/* True while a spin that began at `start` (monotonic_ns, or 0 before the first clock read) may go on. */
static inline int keep_spinning(struct halo_pool *pool, int iteration, int64_t *start) {
  if (pool->spin_ns == 0 || !atomic_load_explicit(&pool->spinning, memory_order_relaxed)) return 0;
  cpu_relax();
  if (iteration % HALO_POOL_SPINS_PER_CLOCK != HALO_POOL_SPINS_PER_CLOCK - 1) return 1;
  const int64_t now = monotonic_ns();
  if (*start == 0) *start = now;
  return now - *start < pool->spin_ns;
}

/* Returns the new generation, or `seen` if the pool is stopping. */
static uint64_t wait_for_work(struct halo_pool *pool, uint64_t seen) {
  int64_t start = 0;
  for (int i = 0;; i++) {
    const uint64_t gen = atomic_load_explicit(&pool->generation, memory_order_acquire);
    if (gen != seen) return gen;
    if (atomic_load_explicit(&pool->stop, memory_order_relaxed)) return seen;
    if (!keep_spinning(pool, i, &start)) break;
  }
  uint64_t gen;
  pthread_mutex_lock(&pool->mutex);
  atomic_fetch_add(&pool->n_sleeping_workers, 1);
  atomic_thread_fence(memory_order_seq_cst); /* see the file comment */
  while ((gen = atomic_load(&pool->generation)) == seen && !atomic_load(&pool->stop)) {
    pthread_cond_wait(&pool->work_cv, &pool->mutex);
  }
  atomic_fetch_sub(&pool->n_sleeping_workers, 1);
  pthread_mutex_unlock(&pool->mutex);
  return gen;
}

/* Gets through the gate of run `gen` unless the caller has closed it (or moved on to a later run). */
static int join_run(struct halo_pool *pool, uint64_t gen) {
  uint64_t gate = atomic_load(&pool->gate);
  for (;;) {
    if ((gate >> 32) != (gen & 0xffffffffu) || (gate & GATE_CLOSED)) return 0;
    if (atomic_compare_exchange_weak(&pool->gate, &gate, gate + 1)) return 1;
  }
}

static void finish_run(struct halo_pool *pool) {
  atomic_fetch_add(&pool->finished, 1);
  atomic_thread_fence(memory_order_seq_cst);
  if (atomic_load(&pool->caller_sleeping)) {
    pthread_mutex_lock(&pool->mutex);
    pthread_cond_broadcast(&pool->done_cv);
    pthread_mutex_unlock(&pool->mutex);
  }
}

static void *worker_main(void *raw) {
  struct halo_worker *self = (struct halo_worker *)raw;
  struct halo_pool *pool = self->pool;
  /* Counted as asleep until here (halo_pool_create), so missing a run while starting is no sign of a busy machine. */
  atomic_fetch_sub(&pool->n_sleeping_workers, 1);
  /* Not the current value: a run published before this thread got here must still be seen. */
  uint64_t seen = 0;
  for (;;) {
    const uint64_t gen = wait_for_work(pool, seen);
    if (gen == seen) return NULL; /* stopping */
    seen = gen;
    /* n_workers is run gen's or a later run's; in the latter case the gate turns this worker away. */
    if (self->index >= pool->n_workers || !join_run(pool, gen)) continue;
    pool->fn(pool->arg, self->index, pool->n_workers);
    finish_run(pool);
  }
}

int halo_pool_create(int n_threads, halo_pool **out) {
  *out = NULL;
  if (n_threads < 1) return EINVAL;
  struct halo_pool *pool = (struct halo_pool *)calloc(1, sizeof *pool);
  if (pool == NULL) return ENOMEM;
  pool->n_threads = n_threads;
  const long n_cpus = sysconf(_SC_NPROCESSORS_ONLN);
  pool->spin_ns = n_cpus > 0 && n_threads > n_cpus ? 0 : HALO_POOL_SPIN_NS;
  atomic_init(&pool->spinning, 1);
  pool->backoff_ns = HALO_POOL_BACKOFF_NS;
  atomic_init(&pool->generation, 0); /* workers start from 0 (worker_main) */
  atomic_init(&pool->gate, GATE_CLOSED);
  atomic_init(&pool->finished, 0);
  atomic_init(&pool->stop, 0);
  atomic_init(&pool->n_sleeping_workers, n_threads - 1);
  atomic_init(&pool->caller_sleeping, 0);
  pthread_mutex_init(&pool->mutex, NULL);
  pthread_cond_init(&pool->work_cv, NULL);
  pthread_cond_init(&pool->done_cv, NULL);
  if (n_threads > 1) {
    pool->threads = (pthread_t *)calloc((size_t)n_threads - 1, sizeof *pool->threads);
    pool->workers = (struct halo_worker *)calloc((size_t)n_threads - 1, sizeof *pool->workers);
    if (pool->threads == NULL || pool->workers == NULL) {
      halo_pool_destroy(pool);
      return ENOMEM;
    }
  }
  /* Workers start with every signal blocked, so the host process's handlers run on its own threads. */
  sigset_t all, previous;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &previous);
  int rc = 0;
  for (int i = 1; i < n_threads; i++) {
    pool->workers[i - 1].pool = pool;
    pool->workers[i - 1].index = i;
    rc = pthread_create(&pool->threads[i - 1], NULL, worker_main, &pool->workers[i - 1]);
    if (rc != 0) break;
    pool->n_started++;
  }
  pthread_sigmask(SIG_SETMASK, &previous, NULL);
  if (rc != 0) {
    halo_pool_destroy(pool);
    return rc;
  }
  *out = pool;
  return 0;
}

void halo_pool_destroy(halo_pool *pool) {
  if (pool == NULL) return;
  pthread_mutex_lock(&pool->mutex);
  atomic_store_explicit(&pool->stop, 1, memory_order_relaxed);
  pthread_cond_broadcast(&pool->work_cv);
  pthread_mutex_unlock(&pool->mutex);
  for (int i = 0; i < pool->n_started; i++) pthread_join(pool->threads[i], NULL);
  pthread_cond_destroy(&pool->done_cv);
  pthread_cond_destroy(&pool->work_cv);
  pthread_mutex_destroy(&pool->mutex);
  free(pool->workers);
  free(pool->threads);
  free(pool);
}

int halo_pool_size(const halo_pool *pool) { return pool->n_threads; }

void halo_pool_run(halo_pool *pool, halo_task_fn fn, void *arg, int n_workers) {
  if (n_workers > pool->n_threads) n_workers = pool->n_threads;
  if (n_workers > 1 && pool->solo_until_ns != 0) {
    if (monotonic_ns() < pool->solo_until_ns) n_workers = 1;
    else pool->solo_until_ns = 0;
  }
  if (n_workers <= 1) {
    fn(arg, 0, 1);
    return;
  }
  pool->fn = fn;
  pool->arg = arg;
  pool->n_workers = n_workers;
  atomic_store(&pool->finished, 0);
  const uint64_t gen = atomic_load_explicit(&pool->generation, memory_order_relaxed) + 1;
  atomic_store(&pool->gate, (gen & 0xffffffffu) << 32);
  atomic_store(&pool->generation, gen);
  atomic_thread_fence(memory_order_seq_cst);
  const int had_sleepers = atomic_load(&pool->n_sleeping_workers) > 0;
  if (had_sleepers) {
    pthread_mutex_lock(&pool->mutex);
    pthread_cond_broadcast(&pool->work_cv);
    pthread_mutex_unlock(&pool->mutex);
  }

  const int64_t share_start_ns = monotonic_ns();
  fn(arg, 0, n_workers);
  const int64_t share_end_ns = monotonic_ns();

  /* Nothing is left to hand out: close the gate and wait for the workers that got through. */
  const int joined = (int)(atomic_fetch_or(&pool->gate, GATE_CLOSED) & GATE_JOINED_MASK);
  int64_t start = 0;
  for (int i = 0; atomic_load_explicit(&pool->finished, memory_order_acquire) != joined; i++) {
    if (keep_spinning(pool, i, &start)) continue;
    pthread_mutex_lock(&pool->mutex);
    atomic_store(&pool->caller_sleeping, 1);
    atomic_thread_fence(memory_order_seq_cst);
    while (atomic_load(&pool->finished) != joined) pthread_cond_wait(&pool->done_cv, &pool->mutex);
    atomic_store(&pool->caller_sleeping, 0);
    pthread_mutex_unlock(&pool->mutex);
    break;
  }
  const int64_t share_ns = share_end_ns - share_start_ns;
  int missed = joined < n_workers - 1 && (!had_sleepers || share_ns > HALO_POOL_WAKE_NS);
  if (!missed && joined > 0) {
    const int64_t waited_ns = monotonic_ns() - share_end_ns;
    missed = waited_ns > HALO_POOL_STRAGGLER_NS && waited_ns > share_ns;
  }
  if (missed) {
    pool->solo_until_ns = monotonic_ns() + pool->backoff_ns;
    pool->backoff_ns = pool->backoff_ns * 2 < HALO_POOL_MAX_BACKOFF_NS ? pool->backoff_ns * 2 : HALO_POOL_MAX_BACKOFF_NS;
  } else {
    pool->backoff_ns = HALO_POOL_BACKOFF_NS;
  }
  if (atomic_load_explicit(&pool->spinning, memory_order_relaxed) == missed) {
    atomic_store_explicit(&pool->spinning, !missed, memory_order_relaxed);
  }
}
