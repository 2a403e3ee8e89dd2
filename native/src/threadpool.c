/*
 * The pool publishes a run by bumping `generation` (release) after writing the task; workers
 * see it while spinning or after waking on work_cv. Each worker decrements `pending` when done;
 * the last one signals done_cv. Both condition-variable waits re-check their predicate under
 * the mutex and every signal is sent under it, so no wake-up is lost.
 */
#include "threadpool.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <sched.h>
#include <unistd.h>

/*
 * Polls before blocking: roughly tens of microseconds, enough to bridge consecutive kernel calls.
 * Only when the pool fits in the online CPUs: oversubscribed, a spinner burns the timeslice the
 * thread it waits for needs (measured: ~1 ms per run for 3 threads on 2 cores). Spinners also
 * yield now and then so other processes' threads are not starved.
 */
#define HALO_POOL_SPIN_ITERATIONS 20000
#define HALO_POOL_SPINS_PER_YIELD 1024

struct halo_worker {
  struct halo_pool *pool;
  int index;
};

struct halo_pool {
  int n_threads;
  pthread_t *threads;           /* (n_threads - 1) */
  struct halo_worker *workers;  /* (n_threads - 1), indices 1..n_threads-1 */
  int n_started;
  int spin_iterations; /* HALO_POOL_SPIN_ITERATIONS, or 0 when oversubscribed */
  pthread_mutex_t mutex;
  pthread_cond_t work_cv;
  pthread_cond_t done_cv;
  atomic_uint_fast64_t generation;
  atomic_int pending;
  atomic_int stop;
  /* The current run; written before `generation` is bumped, read after it is seen. */
  halo_task_fn fn;
  void *arg;
  int n_workers;
};

static inline void spin_pause(int iteration) {
  if (iteration % HALO_POOL_SPINS_PER_YIELD == HALO_POOL_SPINS_PER_YIELD - 1) {
    sched_yield();
    return;
  }
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__) || defined(__arm__)
  __asm__ __volatile__("yield");
#endif
}

/* Returns the new generation, or `seen` if the pool is stopping. */
static uint64_t wait_for_work(struct halo_pool *pool, uint64_t seen) {
  for (int i = 0; i < pool->spin_iterations; i++) {
    const uint64_t gen = atomic_load_explicit(&pool->generation, memory_order_acquire);
    if (gen != seen) return gen;
    if (atomic_load_explicit(&pool->stop, memory_order_relaxed)) return seen;
    spin_pause(i);
  }
  uint64_t gen;
  pthread_mutex_lock(&pool->mutex);
  while ((gen = atomic_load_explicit(&pool->generation, memory_order_acquire)) == seen &&
         !atomic_load_explicit(&pool->stop, memory_order_relaxed)) {
    pthread_cond_wait(&pool->work_cv, &pool->mutex);
  }
  pthread_mutex_unlock(&pool->mutex);
  return gen;
}

static void finish_share(struct halo_pool *pool) {
  if (atomic_fetch_sub_explicit(&pool->pending, 1, memory_order_acq_rel) == 1) {
    pthread_mutex_lock(&pool->mutex);
    pthread_cond_broadcast(&pool->done_cv);
    pthread_mutex_unlock(&pool->mutex);
  }
}

static void *worker_main(void *raw) {
  struct halo_worker *self = (struct halo_worker *)raw;
  struct halo_pool *pool = self->pool;
  /* Not the current value: a run published before this thread got here must still be seen. */
  uint64_t seen = 0;
  for (;;) {
    const uint64_t gen = wait_for_work(pool, seen);
    if (gen == seen) return NULL; /* stopping */
    seen = gen;
    if (self->index < pool->n_workers) pool->fn(pool->arg, self->index, pool->n_workers);
    finish_share(pool);
  }
}

int halo_pool_create(int n_threads, halo_pool **out) {
  *out = NULL;
  if (n_threads < 1) return EINVAL;
  struct halo_pool *pool = (struct halo_pool *)calloc(1, sizeof *pool);
  if (pool == NULL) return ENOMEM;
  pool->n_threads = n_threads;
  const long n_cpus = sysconf(_SC_NPROCESSORS_ONLN);
  pool->spin_iterations = n_cpus > 0 && n_threads > n_cpus ? 0 : HALO_POOL_SPIN_ITERATIONS;
  atomic_init(&pool->generation, 0); /* workers start from 0 (worker_main) */
  atomic_init(&pool->pending, 0);
  atomic_init(&pool->stop, 0);
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
  if (n_workers <= 1 || pool->n_threads == 1) {
    fn(arg, 0, 1);
    return;
  }
  /* Every thread wakes for a run; those with index >= n_workers only check in. */
  pool->fn = fn;
  pool->arg = arg;
  pool->n_workers = n_workers;
  atomic_store_explicit(&pool->pending, pool->n_threads - 1, memory_order_relaxed);
  pthread_mutex_lock(&pool->mutex);
  atomic_fetch_add_explicit(&pool->generation, 1, memory_order_release);
  pthread_cond_broadcast(&pool->work_cv);
  pthread_mutex_unlock(&pool->mutex);

  fn(arg, 0, n_workers);

  for (int i = 0; i < pool->spin_iterations; i++) {
    if (atomic_load_explicit(&pool->pending, memory_order_acquire) == 0) return;
    spin_pause(i);
  }
  pthread_mutex_lock(&pool->mutex);
  while (atomic_load_explicit(&pool->pending, memory_order_acquire) != 0) {
    pthread_cond_wait(&pool->done_cv, &pool->mutex);
  }
  pthread_mutex_unlock(&pool->mutex);
}
