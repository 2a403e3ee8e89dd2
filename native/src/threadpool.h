/*
 * A persistent pool of worker threads for the matrix kernels. Threads are created once per
 * pool; between runs they spin briefly (back-to-back kernel calls in a forward pass find
 * them awake) and then block on a condition variable, so an idle pool uses no CPU.
 *
 * halo_pool_run is synchronous: the calling thread is worker 0 and takes part in the work,
 * and the call returns when every worker has finished. One caller at a time per pool.
 */
#ifndef HALO_THREADPOOL_H
#define HALO_THREADPOOL_H

#ifdef __cplusplus
extern "C" {
#endif

typedef struct halo_pool halo_pool;

/* Runs on each of n_workers workers with worker_index 0..n_workers-1 (0 is the caller). */
typedef void (*halo_task_fn)(void *arg, int worker_index, int n_workers);

/* Creates a pool of n_threads workers in all (n_threads - 1 new threads). Returns 0 or an errno value. */
int halo_pool_create(int n_threads, halo_pool **out);

/* Stops and joins the threads, then frees the pool. NULL is ignored. */
void halo_pool_destroy(halo_pool *pool);

/* Workers in all, the caller included. */
int halo_pool_size(const halo_pool *pool);

/* Runs fn on min(n_workers, pool size) workers and waits for all of them. */
void halo_pool_run(halo_pool *pool, halo_task_fn fn, void *arg, int n_workers);

#ifdef __cplusplus
}
#endif

#endif /* HALO_THREADPOOL_H */
