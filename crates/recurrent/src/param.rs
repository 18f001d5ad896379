//! [`Param`] (a trainable tensor with its gradient), [`Buffer`] (state saved with a model
//! but not trained, such as running statistics), the [`Parameters`] visitor every module
//! implements once, and [`Grads`], a module's gradients in one flat buffer.

use crate::error::{Error, Result};
use ndarray::{ArrayD, IxDyn};
use rand::Rng;

/// A trainable tensor: row-major values, their shape, and the gradient accumulated by
/// backward passes (same shape; zeroed by [`Param::zero_grad`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    /// Shape, as in PyTorch.
    pub shape: Vec<usize>,
    /// Values, row-major.
    pub value: Vec<f32>,
    /// Accumulated gradient, row-major, same length as `value`.
    pub grad: Vec<f32>,
}

impl Param {
    /// A zero tensor of the given shape.
    pub fn zeros(shape: &[usize]) -> Self {
        let n = shape.iter().product();
        Param {
            shape: shape.to_vec(),
            value: vec![0.0; n],
            grad: vec![0.0; n],
        }
    }

    /// A tensor filled with `v`.
    pub fn full(shape: &[usize], v: f32) -> Self {
        let mut p = Self::zeros(shape);
        p.value.fill(v);
        p
    }

    /// Uniform in `[-bound, bound)`, as `torch.nn.init.uniform_(-bound, bound)`.
    pub fn uniform(shape: &[usize], bound: f32, rng: &mut impl Rng) -> Self {
        let mut p = Self::zeros(shape);
        if bound > 0.0 {
            p.value
                .iter_mut()
                .for_each(|v| *v = rng.gen_range(-bound..bound));
        }
        p
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.value.len()
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.value.is_empty()
    }

    /// Sets the gradient to zero.
    pub fn zero_grad(&mut self) {
        self.grad.fill(0.0);
    }

    /// Replaces the values, checking the shape; `name` is used in the error.
    pub fn assign(&mut self, name: &str, shape: &[usize], data: &[f32]) -> Result<()> {
        assign(name, &self.shape, &mut self.value, shape, data)
    }

    /// The values as an `ndarray` array.
    pub fn to_array(&self) -> ArrayD<f32> {
        ArrayD::from_shape_vec(IxDyn(&self.shape), self.value.clone()).expect("shape matches")
    }

    /// The gradient as an `ndarray` array.
    pub fn grad_array(&self) -> ArrayD<f32> {
        ArrayD::from_shape_vec(IxDyn(&self.shape), self.grad.clone()).expect("shape matches")
    }
}

/// A tensor saved and loaded with a model but not trained: optimizers, gradient clipping
/// and gradient collectives never see it (as PyTorch's `register_buffer`).
#[derive(Debug, Clone, PartialEq)]
pub struct Buffer {
    /// Shape, as in PyTorch.
    pub shape: Vec<usize>,
    /// Values, row-major.
    pub value: Vec<f32>,
}

impl Buffer {
    /// A buffer filled with `v`.
    pub fn full(shape: &[usize], v: f32) -> Self {
        Buffer {
            shape: shape.to_vec(),
            value: vec![v; shape.iter().product()],
        }
    }

    /// Replaces the values, checking the shape; `name` is used in the error.
    pub fn assign(&mut self, name: &str, shape: &[usize], data: &[f32]) -> Result<()> {
        assign(name, &self.shape, &mut self.value, shape, data)
    }
}

fn assign(
    name: &str,
    own: &[usize],
    value: &mut [f32],
    shape: &[usize],
    data: &[f32],
) -> Result<()> {
    if shape != own || data.len() != value.len() {
        return Err(Error::shape(name, format!("{own:?}"), shape));
    }
    value.copy_from_slice(data);
    Ok(())
}

/// Walks a module's tensors, giving each its full PyTorch name (`rnn.weight_ih_l0`,
/// `head.bias`), assembled in one reused string: visiting allocates nothing per name.
///
/// A module names its own tensors with [`Visitor::visit`] and its parts with
/// [`Visitor::enter`] / [`Visitor::leave`] (a `part.` prefix) or [`Visitor::set_suffix`]
/// (a suffix such as `_l0_reverse`, as PyTorch's recurrent layers use).
pub struct Visitor<'f, T> {
    prefix: String,
    suffix: String,
    name: String,
    f: &'f mut dyn FnMut(&str, T),
}

impl<'f, T> Visitor<'f, T> {
    /// A visitor calling `f(name, tensor)` for every tensor, in `state_dict` order.
    pub fn new(f: &'f mut dyn FnMut(&str, T)) -> Self {
        Visitor {
            prefix: String::new(),
            suffix: String::new(),
            name: String::new(),
            f,
        }
    }

    /// Visits one tensor named `prefix + name + suffix`.
    pub fn visit(&mut self, name: &str, tensor: T) {
        self.name.clear();
        self.name.push_str(&self.prefix);
        self.name.push_str(name);
        self.name.push_str(&self.suffix);
        (self.f)(&self.name, tensor);
    }

    /// Starts the part `part`: the following names get the prefix `part.`. Returns the
    /// mark to give [`Visitor::leave`].
    pub fn enter(&mut self, part: &str) -> usize {
        let mark = self.prefix.len();
        self.prefix.push_str(part);
        self.prefix.push('.');
        mark
    }

    /// Ends the part started by the [`Visitor::enter`] that returned `mark`.
    pub fn leave(&mut self, mark: usize) {
        self.prefix.truncate(mark);
    }

    /// Sets the suffix of the following names (empty: none).
    pub fn set_suffix(&mut self, suffix: std::fmt::Arguments) {
        use std::fmt::Write;
        self.suffix.clear();
        self.suffix.write_fmt(suffix).expect("writing to a String");
    }
}

/// A visit of saved tensors: `(name, shape, values)`.
pub type StateVisit<'f> = dyn FnMut(&str, &[usize], &[f32]) + 'f;
/// A mutable visit of saved tensors: `(name, shape, values)`.
pub type StateVisitMut<'f> = dyn FnMut(&str, &[usize], &mut [f32]) + 'f;

/// Anything with named parameters (and buffers), in PyTorch's `state_dict()` order.
///
/// A module implements the four visits once, with [`crate::parameters!`] (or by hand for
/// a part list computed at run time); every other method (names, counts, gradients,
/// saving, optimizers) is built on them.
pub trait Parameters {
    /// Visits every parameter, names as in PyTorch's `named_parameters()`.
    fn visit_params<'a>(&'a self, v: &mut Visitor<'_, &'a Param>);
    /// Visits every parameter mutably, same names and order.
    fn visit_params_mut<'a>(&'a mut self, v: &mut Visitor<'_, &'a mut Param>);
    /// Visits every buffer, names as in PyTorch's `named_buffers()` (default: none).
    fn visit_buffers<'a>(&'a self, _v: &mut Visitor<'_, &'a Buffer>) {}
    /// Visits every buffer mutably, same names and order.
    fn visit_buffers_mut<'a>(&'a mut self, _v: &mut Visitor<'_, &'a mut Buffer>) {}

    /// `(name, parameter)` pairs, names as in PyTorch's `named_parameters()`.
    fn named_parameters(&self) -> Vec<(String, &Param)> {
        let mut out = Vec::new();
        self.visit_params(&mut Visitor::new(&mut |n, p| out.push((n.to_string(), p))));
        out
    }

    /// Mutable `(name, parameter)` pairs, same order.
    fn named_parameters_mut(&mut self) -> Vec<(String, &mut Param)> {
        let mut out = Vec::new();
        self.visit_params_mut(&mut Visitor::new(&mut |n, p| out.push((n.to_string(), p))));
        out
    }

    /// `(name, buffer)` pairs, names as in PyTorch's `named_buffers()`.
    fn named_buffers(&self) -> Vec<(String, &Buffer)> {
        let mut out = Vec::new();
        self.visit_buffers(&mut Visitor::new(&mut |n, b| out.push((n.to_string(), b))));
        out
    }

    /// Mutable `(name, buffer)` pairs, same order.
    fn named_buffers_mut(&mut self) -> Vec<(String, &mut Buffer)> {
        let mut out = Vec::new();
        self.visit_buffers_mut(&mut Visitor::new(&mut |n, b| out.push((n.to_string(), b))));
        out
    }

    /// Visits every tensor saved with the model, `(name, shape, values)`: the parameters,
    /// then the buffers (what `state_dict()` holds).
    fn visit_state(&self, f: &mut StateVisit<'_>) {
        self.visit_params(&mut Visitor::new(&mut |n, p| f(n, &p.shape, &p.value)));
        self.visit_buffers(&mut Visitor::new(&mut |n, b| f(n, &b.shape, &b.value)));
    }

    /// Visits every tensor saved with the model mutably, same order: `(name, shape,
    /// values)`.
    fn visit_state_mut(&mut self, f: &mut StateVisitMut<'_>) {
        self.visit_params_mut(&mut Visitor::new(&mut |n, p| f(n, &p.shape, &mut p.value)));
        self.visit_buffers_mut(&mut Visitor::new(&mut |n, b| f(n, &b.shape, &mut b.value)));
    }

    /// Zeroes every gradient (`optimizer.zero_grad()`).
    fn zero_grad(&mut self) {
        self.visit_params_mut(&mut Visitor::new(&mut |_, p| p.zero_grad()));
    }

    /// Total number of scalar parameters.
    fn num_parameters(&self) -> usize {
        let mut n = 0;
        self.visit_params(&mut Visitor::new(&mut |_, p| n += p.len()));
        n
    }

    /// Every parameter's accumulated gradient, copied into one flat buffer.
    fn grads(&self) -> Grads {
        let mut g = Grads::default();
        self.visit_params(&mut Visitor::new(&mut |_, p| {
            g.data.extend_from_slice(&p.grad);
            g.lens.push(p.len());
        }));
        g
    }

    /// Replaces every parameter's gradient by its part of `grads` (laid out as
    /// [`Parameters::grads`] gives it).
    fn set_grads(&mut self, grads: &Grads) -> Result<()> {
        grads.check(self.param_lens())?;
        let mut parts = grads.parts();
        self.visit_params_mut(&mut Visitor::new(&mut |_, p| {
            p.grad.copy_from_slice(parts.next().expect("checked"))
        }));
        Ok(())
    }

    /// Adds `grads` (laid out as [`Parameters::grads`] gives it) to every parameter's
    /// accumulated gradient.
    fn add_grads(&mut self, grads: &Grads) -> Result<()> {
        grads.check(self.param_lens())?;
        let mut parts = grads.parts();
        self.visit_params_mut(&mut Visitor::new(&mut |_, p| {
            let part = parts.next().expect("checked");
            p.grad.iter_mut().zip(part).for_each(|(a, b)| *a += b);
        }));
        Ok(())
    }

    /// Number of values of every parameter, in visit order.
    fn param_lens(&self) -> Vec<usize> {
        let mut lens = Vec::new();
        self.visit_params(&mut Visitor::new(&mut |_, p| lens.push(p.len())));
        lens
    }
}

/// An optional part: its tensors when present, none otherwise.
impl<T: Parameters> Parameters for Option<T> {
    fn visit_params<'a>(&'a self, v: &mut Visitor<'_, &'a Param>) {
        if let Some(t) = self {
            t.visit_params(v);
        }
    }
    fn visit_params_mut<'a>(&'a mut self, v: &mut Visitor<'_, &'a mut Param>) {
        if let Some(t) = self {
            t.visit_params_mut(v);
        }
    }
    fn visit_buffers<'a>(&'a self, v: &mut Visitor<'_, &'a Buffer>) {
        if let Some(t) = self {
            t.visit_buffers(v);
        }
    }
    fn visit_buffers_mut<'a>(&'a mut self, v: &mut Visitor<'_, &'a mut Buffer>) {
        if let Some(t) = self {
            t.visit_buffers_mut(v);
        }
    }
}

/// The gradients of a module's parameters in one flat buffer, parameter after parameter in
/// visit order: what a backward pass computes without touching the module, what replicas
/// sum, and what a collective reduces in one call.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Grads {
    data: Vec<f32>,
    lens: Vec<usize>,
}

impl Grads {
    /// Zero gradients for every parameter of `model`.
    pub fn zeros_for(model: &(impl Parameters + ?Sized)) -> Self {
        let lens = model.param_lens();
        Grads {
            data: vec![0.0; lens.iter().sum()],
            lens,
        }
    }

    /// All gradients, flat.
    pub fn as_slice(&self) -> &[f32] {
        &self.data
    }

    /// All gradients, flat and mutable (e.g. for an all-reduce).
    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        &mut self.data
    }

    /// The gradient of parameter `index` (in visit order).
    pub fn part(&self, index: usize) -> &[f32] {
        let start: usize = self.lens[..index].iter().sum();
        &self.data[start..start + self.lens[index]]
    }

    /// Sets every gradient to zero, keeping the layout.
    pub fn fill_zero(&mut self) {
        self.data.fill(0.0);
    }

    /// Adds `other` (same layout), e.g. the gradients of another shard of a batch.
    pub fn add(&mut self, other: &Grads) -> Result<()> {
        other.check(self.lens.clone())?;
        self.data
            .iter_mut()
            .zip(&other.data)
            .for_each(|(a, b)| *a += b);
        Ok(())
    }

    /// Multiplies every gradient by `factor`.
    pub fn scale(&mut self, factor: f32) {
        self.data.iter_mut().for_each(|g| *g *= factor);
    }

    /// One destination per parameter, for a backward pass that accumulates into them.
    pub fn slices(&mut self) -> GradSlices<'_> {
        let mut rest = &mut self.data[..];
        let mut out = Vec::with_capacity(self.lens.len());
        for &len in &self.lens {
            let (part, tail) = std::mem::take(&mut rest).split_at_mut(len);
            out.push(part);
            rest = tail;
        }
        GradSlices(out.into_iter())
    }

    fn parts(&self) -> impl Iterator<Item = &[f32]> {
        let mut start = 0;
        self.lens.iter().map(move |&len| {
            start += len;
            &self.data[start - len..start]
        })
    }

    fn check(&self, lens: Vec<usize>) -> Result<()> {
        if self.lens != lens {
            return Err(Error::shape(
                "gradients",
                format!("one part per parameter of sizes {lens:?}"),
                &self.lens,
            ));
        }
        Ok(())
    }
}

/// Where a backward pass accumulates parameter gradients: one slice per parameter, handed
/// out in visit order (see [`Grads::slices`] and [`accumulate_into_params`]).
pub struct GradSlices<'a>(std::vec::IntoIter<&'a mut [f32]>);

impl<'a> GradSlices<'a> {
    /// Destinations of one's own, one per parameter in visit order (for example one
    /// buffer per parameter that is handed on afterwards).
    pub fn from_parts(parts: impl IntoIterator<Item = &'a mut [f32]>) -> Self {
        GradSlices(parts.into_iter().collect::<Vec<_>>().into_iter())
    }

    /// The destination of the next parameter, which has `len` values.
    ///
    /// # Panics
    /// If the slices were made for another module (a programming error, not a data one).
    pub fn next(&mut self, len: usize) -> &'a mut [f32] {
        let s = self.0.next().expect("a gradient slice for every parameter");
        assert_eq!(s.len(), len, "gradient slice of another parameter");
        s
    }

    /// The destinations of the next `count` parameters, for a part of the module.
    pub fn split(&mut self, count: usize) -> GradSlices<'a> {
        GradSlices(self.0.by_ref().take(count).collect::<Vec<_>>().into_iter())
    }

    /// Destinations not handed out yet.
    pub fn remaining(&self) -> usize {
        self.0.len()
    }
}

/// Runs `backward` with destinations that are the parameters' own `grad` buffers (moved
/// out for the call, so the module stays shared): the way a module owner accumulates
/// gradients for an optimizer without copying them.
pub fn accumulate_into_params<M: Parameters + ?Sized, R>(
    model: &mut M,
    backward: impl FnOnce(&M, GradSlices<'_>) -> R,
) -> R {
    let mut taken: Vec<Vec<f32>> = Vec::new();
    model.visit_params_mut(&mut Visitor::new(&mut |_, p| {
        taken.push(std::mem::take(&mut p.grad))
    }));
    let slices: Vec<&mut [f32]> = taken.iter_mut().map(|g| &mut g[..]).collect();
    let out = backward(model, GradSlices(slices.into_iter()));
    let mut back = taken.into_iter();
    model.visit_params_mut(&mut Visitor::new(&mut |_, p| {
        p.grad = back.next().expect("one per parameter")
    }));
    out
}

/// Implements [`Parameters`] for a struct from one list of its tensors, so that the
/// shared and the mutable visits cannot disagree. Entries, in `state_dict` order:
/// - `param "name" => field;` a [`Param`];
/// - `optional "name" => field;` an `Option<Param>`;
/// - `buffer "name" => field;` a [`Buffer`];
/// - `part "name" => field;` a nested [`Parameters`] (its names prefixed `name.`);
/// - `inline field;` a nested [`Parameters`] whose names are not prefixed.
#[macro_export]
macro_rules! parameters {
    ($ty:ty { $($entries:tt)* }) => {
        impl $crate::param::Parameters for $ty {
            fn visit_params<'a>(
                &'a self,
                v: &mut $crate::param::Visitor<'_, &'a $crate::param::Param>,
            ) {
                $crate::parameters!(@params self v [] visit_params; $($entries)*);
            }
            fn visit_params_mut<'a>(
                &'a mut self,
                v: &mut $crate::param::Visitor<'_, &'a mut $crate::param::Param>,
            ) {
                $crate::parameters!(@params self v [mut] visit_params_mut; $($entries)*);
            }
            fn visit_buffers<'a>(
                &'a self,
                v: &mut $crate::param::Visitor<'_, &'a $crate::param::Buffer>,
            ) {
                $crate::parameters!(@buffers self v [] visit_buffers; $($entries)*);
            }
            fn visit_buffers_mut<'a>(
                &'a mut self,
                v: &mut $crate::param::Visitor<'_, &'a mut $crate::param::Buffer>,
            ) {
                $crate::parameters!(@buffers self v [mut] visit_buffers_mut; $($entries)*);
            }
        }
    };
    (@params $s:ident $v:ident [$($m:tt)?] $visit:ident;) => { let _ = &$v; };
    (@params $s:ident $v:ident [$($m:tt)?] $visit:ident; param $n:literal => $f:ident; $($rest:tt)*) => {
        $v.visit($n, & $($m)? $s.$f);
        $crate::parameters!(@params $s $v [$($m)?] $visit; $($rest)*);
    };
    (@params $s:ident $v:ident [$($m:tt)?] $visit:ident; optional $n:literal => $f:ident; $($rest:tt)*) => {
        if let Some(p) = & $($m)? $s.$f {
            $v.visit($n, p);
        }
        $crate::parameters!(@params $s $v [$($m)?] $visit; $($rest)*);
    };
    (@params $s:ident $v:ident [$($m:tt)?] $visit:ident; buffer $n:literal => $f:ident; $($rest:tt)*) => {
        $crate::parameters!(@params $s $v [$($m)?] $visit; $($rest)*);
    };
    (@buffers $s:ident $v:ident [$($m:tt)?] $visit:ident;) => { let _ = &$v; };
    (@buffers $s:ident $v:ident [$($m:tt)?] $visit:ident; buffer $n:literal => $f:ident; $($rest:tt)*) => {
        $v.visit($n, & $($m)? $s.$f);
        $crate::parameters!(@buffers $s $v [$($m)?] $visit; $($rest)*);
    };
    (@buffers $s:ident $v:ident [$($m:tt)?] $visit:ident; param $n:literal => $f:ident; $($rest:tt)*) => {
        $crate::parameters!(@buffers $s $v [$($m)?] $visit; $($rest)*);
    };
    (@buffers $s:ident $v:ident [$($m:tt)?] $visit:ident; optional $n:literal => $f:ident; $($rest:tt)*) => {
        $crate::parameters!(@buffers $s $v [$($m)?] $visit; $($rest)*);
    };
    (@$kind:ident $s:ident $v:ident [$($m:tt)?] $visit:ident; part $n:literal => $f:ident; $($rest:tt)*) => {
        let mark = $v.enter($n);
        $crate::param::Parameters::$visit(& $($m)? $s.$f, $v);
        $v.leave(mark);
        $crate::parameters!(@$kind $s $v [$($m)?] $visit; $($rest)*);
    };
    (@$kind:ident $s:ident $v:ident [$($m:tt)?] $visit:ident; inline $f:ident; $($rest:tt)*) => {
        $crate::param::Parameters::$visit(& $($m)? $s.$f, $v);
        $crate::parameters!(@$kind $s $v [$($m)?] $visit; $($rest)*);
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A module with a parameter, an optional one, a buffer and a nested part.
    struct Inner {
        weight: Param,
        running: Buffer,
    }
    crate::parameters!(Inner { param "weight" => weight; buffer "running" => running; });

    struct Outer {
        scale: Param,
        shift: Option<Param>,
        inner: Inner,
    }
    crate::parameters!(Outer {
        param "scale" => scale;
        optional "shift" => shift;
        part "inner" => inner;
    });

    fn outer() -> Outer {
        Outer {
            scale: Param::full(&[2], 1.0),
            shift: Some(Param::zeros(&[3])),
            inner: Inner {
                weight: Param::full(&[2, 2], 2.0),
                running: Buffer::full(&[4], 0.5),
            },
        }
    }

    #[test]
    fn names_and_orders_agree_between_shared_and_mutable_visits() {
        let mut m = outer();
        let names: Vec<String> = m.named_parameters().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["scale", "shift", "inner.weight"]);
        let mut_names: Vec<String> = m
            .named_parameters_mut()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names, mut_names);
        let buffers: Vec<String> = m.named_buffers().into_iter().map(|(n, _)| n).collect();
        assert_eq!(buffers, ["inner.running"]);
        assert_eq!(m.named_buffers_mut().len(), 1);
        assert_eq!(m.num_parameters(), 2 + 3 + 4);
        m.shift = None;
        assert_eq!(m.param_lens(), [2, 4]);
    }

    #[test]
    fn flat_gradients_round_trip_and_accumulate() {
        let mut m = outer();
        let mut g = Grads::zeros_for(&m);
        for (i, v) in g.as_mut_slice().iter_mut().enumerate() {
            *v = i as f32;
        }
        m.set_grads(&g).unwrap();
        assert_eq!(m.inner.weight.grad, [5.0, 6.0, 7.0, 8.0]);
        m.add_grads(&g).unwrap();
        assert_eq!(m.grads().part(2), [10.0, 12.0, 14.0, 16.0]);
        // Buffers have no gradient and are not part of the flat layout.
        assert_eq!(m.grads().as_slice().len(), 9);
        m.shift = None;
        assert!(
            m.set_grads(&g).is_err(),
            "a layout of another module is refused"
        );
    }

    #[test]
    fn accumulating_into_params_writes_the_params_own_gradients() {
        let mut m = outer();
        accumulate_into_params(&mut m, |model, mut slices| {
            assert_eq!(model.scale.value, [1.0, 1.0]);
            slices.next(2).fill(1.0);
            let mut rest = slices.split(2);
            rest.next(3)[0] = 3.0;
            rest.next(4)[3] = 4.0;
            assert_eq!(slices.remaining(), 0);
        });
        assert_eq!(m.scale.grad, [1.0, 1.0]);
        assert_eq!(m.shift.as_ref().unwrap().grad, [3.0, 0.0, 0.0]);
        assert_eq!(m.inner.weight.grad, [0.0, 0.0, 0.0, 4.0]);
    }
}
