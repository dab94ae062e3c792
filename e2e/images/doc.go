// Package images builds the container images of the e2e suite locally,
// from files on this machine, through the Docker API: no image is ever
// pulled and no base image other than scratch is used, because the machines
// the suite runs on reach no image registry.
//
//   - gr-redis:e2e: Debian's redis-server binary plus exactly the shared
//     libraries ldd reports for it and the dynamic loader, FROM scratch.
//   - gr-nats:e2e: nats-server built as a static binary from the
//     github.com/nats-io/nats-server/v2 module pinned in go.mod.
//   - gr-child:e2e (and later gr-manager:e2e): static binaries built from
//     this repository's cmd/ packages; see [RepoImages].
//
// Every build context is a deterministic tar stream (sorted entries, fixed
// owners, modes from the sources, zero timestamps). Its SHA-256 is stored in
// the image label [LabelHash]; when the image under the same reference
// already carries that hash the build is skipped, so repeated test runs pay
// only for `go build`'s up-to-date check and hashing the inputs.
//
// Images carry [LabelImage] so that they can be listed (`docker images
// --filter label=globalreplica.e2e.image`); they are kept between runs on
// purpose. Containers are not this package's business: see e2e/harness.
package images
