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

/// How [`for_each_tile_copied`]'s `copy` lays out a block of `A` in the thread's buffer.
#[derive(Clone, Copy)]
pub(super) enum Copied {
    /// Tile by tile as [`for_each_tile`] takes them: the tile of `mr` rows starting at row
    /// `r0` of the group at `(r0 - group.0) * per_row`, `mr` values per depth step.
    Tiles { per_row: usize },
    /// Row by row, `stride` values apart (the rows of a plain `A` whose own stride
    /// would put them in the same sets of the L1 cache, see [`rows_collide_in_l1`]).
    Rows { stride: usize },
}

/// [`for_each_tile`] over a block of `A` copied a depth block of a group of rows at a
/// time (groups of [`column_group_rows`] rows): `copy(group, k0, kc, buffer)` fills the
/// thread's `buffer` before the block's first tile and says how it laid it out.
///
/// Read in place, every step of a tile of a transposed `A` would take a new cache line,
/// `ld` floats from the last (with `ld` a multiple of 1024 all in one set of the L1 cache,
/// and each on another page, out of the prefetchers' reach); the copy reads `A` along its
/// stored rows instead.
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
    mut copy: impl FnMut((usize, usize), usize, usize, &mut Vec<T>) -> Copied,
    tile: impl Fn(TileAt, (*const T, usize, usize)),
) {
    // Taken out of the thread-local and put back, rather than borrowed in a closure:
    // the intrinsics are only inlined into code compiled with the kernel's features.
    let mut copies = buffer.take();
    let group_rows = column_group_rows::<K>();
    for g0 in (rows.0..rows.1).step_by(group_rows) {
        let group = (g0, (g0 + group_rows).min(rows.1));
        // The depth block in `copies` and its layout.
        let mut copied: Option<(usize, Copied)> = None;
        let block_of_a = |k0: usize, kc: usize, r0: usize, mr: usize| {
            let layout = match copied {
                Some((k, layout)) if k == k0 => layout,
                _ => {
                    let layout = copy(group, k0, kc, &mut copies);
                    copied = Some((k0, layout));
                    layout
                }
            };
            match layout {
                Copied::Tiles { per_row } => (copies.as_ptr().add((r0 - group.0) * per_row), 1, mr),
                Copied::Rows { stride } => {
                    (copies.as_ptr().add((r0 - group.0) * stride), stride, 1)
                }
            }
        };
        for_each_tile::<K, _>(b, out, beta, group, panels, block_of_a, &tile);
    }
    buffer.set(copies);
}

/// Whether rows of `A` `ld` floats apart, read in place, would evict each other from the
/// L1 cache within one tile: an L1 way covers 4 KiB on x86 cores (64 sets of 64-byte
/// lines), so with `ld` a multiple of 1024 floats the rows of a tile all fall into one set
/// at each depth step, more lines than a set holds. (At 512 floats, two sets, the copy
/// measured slower than reading in place.)
fn rows_collide_in_l1(ld: usize) -> bool {
    const WAY_FLOATS: usize = 4096 / 4;
    ld.is_multiple_of(WAY_FLOATS)
}

/// Copies rows `rows`, columns `k0 .. k0 + kc` of a plain `A` into `buffer` row by row,
/// a line's worth of floats more than `kc` apart, so that consecutive rows start in
/// different sets of the L1 cache.
#[inline(always)]
unsafe fn copy_rows(
    a: Mat,
    rows: (usize, usize),
    k0: usize,
    kc: usize,
    buffer: &mut Vec<f32>,
) -> Copied {
    debug_assert!(!a.transposed);
    let stride = kc + 16;
    let m = rows.1 - rows.0;
    if buffer.len() < m * stride {
        buffer.resize(m * stride, 0.0);
    }
    for r in 0..m {
        let src = a.data.as_ptr().add((rows.0 + r) * a.ld + k0);
        std::ptr::copy_nonoverlapping(src, buffer.as_mut_ptr().add(r * stride), kc);
    }
    Copied::Rows { stride }
}

/// The `f32` product's loops, the same for every kernel: element `(r, kk)` of a block of
/// `A` is at `ap + r * row_step + kk * k_step`, read in place from a plain `A` (copied
/// row by row where its stride collides in the L1 cache, see [`rows_collide_in_l1`]), or
/// for a transposed `A` from the thread's copy that `copy` makes (see
/// [`for_each_tile_copied`]).
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
    copy: impl FnMut((usize, usize), usize, usize, &mut Vec<f32>) -> Copied,
    tile: impl Fn(TileAt, (*const f32, usize, usize)),
) {
    if a.transposed {
        return for_each_tile_copied::<K, _>(&COLUMNS, b, out, beta, rows, panels, copy, tile);
    }
    // A tile of fewer than 8 rows fits in a set whatever the stride.
    if rows.1 - rows.0 >= 8 && rows_collide_in_l1(a.ld) {
        let copy = |group, k0, kc, buffer: &mut Vec<f32>| copy_rows(a, group, k0, kc, buffer);
        return for_each_tile_copied::<K, _>(&COLUMNS, b, out, beta, rows, panels, copy, tile);
    }
    let block_of_a = |k0: usize, _kc: usize, r0: usize, _mr: usize| {
        (a.data.as_ptr().add(r0 * a.ld + k0), a.ld, 1)
    };
    for_each_tile::<K, _>(b, out, beta, rows, panels, block_of_a, tile)
}
