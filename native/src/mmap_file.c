/*
 * Maps a whole file read-only (PROT_READ, MAP_PRIVATE), so weights are used in place from
 * the page cache with no second copy. The descriptor is closed right away; the mapping
 * lives until halo_unmap_file.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "halo_api.h"

halo_status halo_map_file(const char *path, void **addr, size_t *length, char *err, size_t err_len) {
  *addr = NULL;
  *length = 0;
  const int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    snprintf(err, err_len, "cannot open: %s", strerror(errno));
    return HALO_E_FILE;
  }
  struct stat st;
  if (fstat(fd, &st) != 0) {
    snprintf(err, err_len, "cannot stat: %s", strerror(errno));
    close(fd);
    return HALO_E_FILE;
  }
  if (!S_ISREG(st.st_mode)) {
    snprintf(err, err_len, "not a regular file");
    close(fd);
    return HALO_E_FILE;
  }
  if (st.st_size == 0) {
    close(fd);
    return HALO_OK;
  }
  void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
  const int map_errno = errno;
  close(fd);
  if (p == MAP_FAILED) {
    snprintf(err, err_len, "cannot mmap %lld bytes: %s", (long long)st.st_size, strerror(map_errno));
    return HALO_E_FILE;
  }
  *addr = p;
  *length = (size_t)st.st_size;
  return HALO_OK;
}

void halo_unmap_file(void *addr, size_t length) {
  if (addr != NULL && length > 0) munmap(addr, length);
}
