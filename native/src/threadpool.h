/*
 * A persistent pool of worker threads for the matrix kernels. Threads are created once per
 * pool; between runs they spin briefly (back-to-back kernel calls in a forward pass find
 * them awake) and then block on a condition variable, so an idle pool uses no CPU.
 *
 * halo_pool_run is synchronous: the calling thread is worker 0 and takes part in the work,
 * and the call returns when every participant has finished. Workers take part only if they
 * start before the caller has finished its own share, so a task must hand out its work
 * dynamically (a shared atomic counter), never by worker index: the work then completes
 * whichever workers take part, and with results that must not depend on who computed what.
 * One caller at a time per pool.
 */
#ifndef HALO_THREADPOOL_H
#define HALO_THREADPOOL_H

#ifdef __cplusplus
extern "C" {
#endif

typedef struct halo_pool halo_pool;

/*
 * Runs on the caller (worker_index 0) and on each worker (1..n_workers-1) that takes part;
 * returns once no work is left to claim.
 */
typedef void (*halo_task_fn)(void *arg, int worker_index, int n_workers);

/* Creates a pool of n_threads workers in all (n_threads - 1 new threads). Returns 0 or an errno value. */
int halo_pool_create(int n_threads, halo_pool **out);

/* Stops and joins the threads, then frees the pool. NULL is ignored. */
void halo_pool_destroy(halo_pool *pool);

/* Workers in all, the caller included. */
int halo_pool_size(const halo_pool *pool);

/*
 * Runs fn on the caller and on up to min(n_workers, pool size) - 1 workers, and waits for the
 * workers that took part. After a run a worker missed (the machine is busy), runs use the
 * caller alone for a short back-off.
 */
void halo_pool_run(halo_pool *pool, halo_task_fn fn, void *arg, int n_workers);

#ifdef __cplusplus
}
#endif

#endif /* HALO_THREADPOOL_H */
