//! The blocked loops the SIMD kernels share: depth blocks of `KC`, groups of packed panels
//! that stay in L2, tiles of rows of `A` read in place, and for a transposed `A` a copy of
//! a depth block of a group of rows at a time. Each kernel brings its tile shape
//! ([`Tiles`]) and its register tile; everything here is `#[inline(always)]`, so that it is
//! compiled with the calling kernel's target features.

use super::{Mat, Out, PackedMatrix, KC};

/// The register-tile geometry of a SIMD kernel.
pub(super) trait Tiles {
    /// Columns of a packed panel of `B`.
    const NR: usize;
    /// Rows of the groups of a transposed `A` copied at a time come in multiples of this
    /// (a multiple of the largest tile's rows, so that the tiles are those of the whole
    /// product).
    const GROUP_ROWS: usize;
    /// Rows of the next tile when `left` rows remain.
    fn tile_rows(left: usize) -> usize;
}

/// Bytes of packed `B` one pass over the rows of `A` multiplies: panels are taken in
/// groups this large, so that a group stays in the core's L2 cache while every row block
/// of `A` meets it (instead of streaming all of `B` from memory once per row block).
fn panel_group_bytes() -> usize {
    crate::kernels::CpuInfo::get().panel_group_bytes()
}

thread_local! {
    /// A thread's copy of the block of a transposed `A` it multiplies in `f32` (see
    /// [`for_each_tile_copied`]), kept for the next product.
    static COLUMNS: std::cell::Cell<Vec<f32>> =
        const { std::cell::Cell::new(Vec::new()) };
}

/// Rows of a transposed `A` copied at a time: as many of one depth block as fit in
/// [`CpuInfo::column_block_bytes`](crate::kernels::CpuInfo::column_block_bytes), a
/// multiple of `K::GROUP_ROWS`.
fn column_group_rows<K: Tiles>() -> usize {
    let rows = K::GROUP_ROWS;
    (crate::kernels::CpuInfo::get().column_block_bytes() / (KC * 4) / rows).max(1) * rows
}

/// Where one tile of the product goes: see [`for_each_tile`].
#[derive(Clone, Copy)]
pub(super) struct TileAt {
    /// First row of `B`'s depth block and its depth.
    pub k0: usize,
    pub kc: usize,
    /// Rows of the tile and panel of `B`.
    pub mr: usize,
    pub panel: usize,
    /// The tile's first output element, its width and the `beta` it applies.
    pub c: *mut f32,
    pub nc: usize,
    pub beta: f32,
}

/// The blocked loops: for each `KC`-deep block, each group of panels (see
/// [`panel_group_bytes`]) and each tile of rows (`K::tile_rows`), `block_of_a(k0, kc, r0,
/// mr)` readies that block of `A`, and `tile` multiplies it with every panel of the group.
///
/// # Safety
/// `out` must cover rows `rows` and the columns of `panels`.
#[inline(always)]
pub(super) unsafe fn for_each_tile<K: Tiles, A: Copy>(
    b: &PackedMatrix,
    out: Out,
    beta: f32,
    rows: (usize, usize),
    panels: (usize, usize),
    mut block_of_a: impl FnMut(usize, usize, usize, usize) -> A,
    tile: impl Fn(TileAt, A),
) {
    let element_bytes = if b.is_bf16() { 2 } else { 4 };
    for k0 in (0..b.k).step_by(KC) {
        let kc = KC.min(b.k - k0);
        let beta = if k0 == 0 { beta } else { 1.0 };
        let group = (panel_group_bytes() / (kc * K::NR * element_bytes)).max(1);
        for_each_group(panels, group, |group| {
            let mut r0 = rows.0;
            while r0 < rows.1 {
                let mr = K::tile_rows(rows.1 - r0);
                let a_block = block_of_a(k0, kc, r0, mr);
                for panel in group.0..group.1 {
                    let col0 = panel * K::NR;
                    let at = TileAt {
                        k0,
                        kc,
                        mr,
                        panel,
                        c: out.ptr.add(r0 * out.ld + col0 - out.col0),
                        nc: K::NR.min(b.n - col0),
                        beta,
                    };
                    tile(at, a_block);
                }
                r0 += mr;
            }
        });
    }
}

/// Calls `f` on consecutive ranges of at most `group` panels covering `panels`.
#[inline(always)]
fn for_each_group(panels: (usize, usize), group: usize, mut f: impl FnMut((usize, usize))) {
    let mut p0 = panels.0;
    while p0 < panels.1 {
        let p1 = (p0 + group).min(panels.1);
        f((p0, p1));
        p0 = p1;
    }
}

/// [`for_each_tile`] over a transposed `A` copied a depth block of a group of rows at
/// a time (groups of [`column_group_rows`] rows): `copy(group, k0, kc, buffer)` fills the thread's
/// `buffer` before the block's first tile and returns the values it keeps per row; the
/// tile starting at row `r0` is then `(r0 - group.0)` times that into the buffer, `mr`
/// values per depth step.
///
/// Read in place, every step of a tile would take a new cache line, `ld` floats from the
/// last (with `ld` a multiple of 1024 all in one set of the L1 cache, and each on another
/// page, out of the prefetchers' reach); the copy reads `A` along its stored rows instead.
///
/// # Safety
/// As [`for_each_tile`].
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn for_each_tile_copied<K: Tiles, T: 'static>(
    buffer: &'static std::thread::LocalKey<std::cell::Cell<Vec<T>>>,
    b: &PackedMatrix,
    out: Out,
    beta: f32,
    rows: (usize, usize),
    panels: (usize, usize),
    mut copy: impl FnMut((usize, usize), usize, usize, &mut Vec<T>) -> usize,
    tile: impl Fn(TileAt, (*const T, usize, usize)),
) {
    // Taken out of the thread-local and put back, rather than borrowed in a closure:
    // the intrinsics are only inlined into code compiled with the kernel's features.
    let mut copies = buffer.take();
    let group_rows = column_group_rows::<K>();
    for g0 in (rows.0..rows.1).step_by(group_rows) {
        let group = (g0, (g0 + group_rows).min(rows.1));
        // The depth block in `copies` and its values per row.
        let mut copied: Option<(usize, usize)> = None;
        let block_of_a = |k0: usize, kc: usize, r0: usize, mr: usize| {
            let per_row = match copied {
                Some((k, per_row)) if k == k0 => per_row,
                _ => {
                    let per_row = copy(group, k0, kc, &mut copies);
                    copied = Some((k0, per_row));
                    per_row
                }
            };
            (copies.as_ptr().add((r0 - group.0) * per_row), 1, mr)
        };
        for_each_tile::<K, _>(b, out, beta, group, panels, block_of_a, &tile);
    }
    buffer.set(copies);
}

/// The `f32` product's loops, the same for every kernel: element `(r, kk)` of a block of
/// `A` is at `ap + r * row_step + kk * k_step`, read in place from a plain `A`, or for a
/// transposed `A` from the thread's copy that `copy` makes (see [`for_each_tile_copied`]).
///
/// # Safety
/// As [`for_each_tile`].
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn for_each_f32_tile<K: Tiles>(
    a: Mat,
    b: &PackedMatrix,
    out: Out,
    beta: f32,
    rows: (usize, usize),
    panels: (usize, usize),
    copy: impl FnMut((usize, usize), usize, usize, &mut Vec<f32>) -> usize,
    tile: impl Fn(TileAt, (*const f32, usize, usize)),
) {
    if !a.transposed {
        let block_of_a = |k0: usize, _kc: usize, r0: usize, _mr: usize| {
            (a.data.as_ptr().add(r0 * a.ld + k0), a.ld, 1)
        };
        return for_each_tile::<K, _>(b, out, beta, rows, panels, block_of_a, tile);
    }
    for_each_tile_copied::<K, _>(&COLUMNS, b, out, beta, rows, panels, copy, tile);
}
