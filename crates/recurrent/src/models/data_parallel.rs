//! The steps of [`super::fit_on`] that cross ranks: the starting weights or checkpoint
//! from rank 0, the sum of the shares' gradients, and averaged buffers.

use crate::distributed::Collective;
use crate::error::{Error, Result};
use crate::param::{Parameters, Visitor};

/// Multiplies every accumulated gradient of `model` by `factor`.
pub(super) fn scale_grads(model: &mut (impl Parameters + ?Sized), factor: f32) {
    model.visit_params_mut(&mut Visitor::new(&mut |_, p| {
        p.grad.iter_mut().for_each(|g| *g *= factor)
    }));
}

/// Rank 0's weights and buffers on every rank.
pub(super) fn share_weights(
    model: &mut (impl Parameters + ?Sized),
    collective: &dyn Collective,
) -> Result<()> {
    let mut flat = Vec::new();
    model.visit_state(&mut |_, _, v| flat.extend_from_slice(v));
    collective.broadcast(&mut flat, 0)?;
    let mut rest = &flat[..];
    model.visit_state_mut(&mut |_, _, v| {
        let (mine, others) = rest.split_at(v.len());
        v.copy_from_slice(mine);
        rest = others;
    });
    Ok(())
}

/// What rank 0 found for `resume` (`checkpoint`: nothing to resume, the checkpoint file's
/// bytes, or why it could not be read), on every rank: the bytes travel, so the other ranks
/// need no copy of the file. Tags of the broadcast message: 0 nothing, 1 a file, 2 an error.
pub(super) fn share_checkpoint(
    checkpoint: Result<Option<Vec<u8>>>,
    collective: &dyn Collective,
) -> Result<Option<Vec<u8>>> {
    let mut message = Vec::new();
    if collective.rank() == 0 {
        match &checkpoint {
            Ok(None) => message.push(0),
            Ok(Some(bytes)) => {
                message.push(1);
                message.extend_from_slice(bytes);
            }
            Err(e) => {
                message.push(2);
                message.extend_from_slice(e.to_string().as_bytes());
            }
        }
    }
    collective.broadcast_bytes(&mut message, 0)?;
    if collective.rank() == 0 {
        return checkpoint;
    }
    match message.split_first() {
        Some((0, _)) => Ok(None),
        Some((1, bytes)) => Ok(Some(bytes.to_vec())),
        Some((2, text)) => Err(Error::Invalid(format!(
            "rank 0 could not resume: {}",
            String::from_utf8_lossy(text)
        ))),
        _ => Err(Error::Invalid(
            "rank 0 sent no checkpoint message (different programs on the ranks?)".into(),
        )),
    }
}

/// A batch's numbers summed over the ranks.
pub(super) struct BatchSum {
    /// Sum of the ranks' losses.
    pub loss: f64,
    /// Sum of the ranks' loss counts.
    pub count: usize,
    /// Whether the time budget ran out on any rank.
    pub out_of_time: bool,
}

/// Sums the ranks' gradients (each `count` times its share's mean gradient, see
/// [`super::Trainable::train_share`]) and divides them by the summed count, leaving the
/// whole batch's mean gradient in `model` on every rank; sums the losses and counts and
/// tells whether any rank ran out of time, in one more message.
pub(super) fn sum_gradients(
    model: &mut (impl Parameters + ?Sized),
    collective: &dyn Collective,
    loss: f64,
    count: usize,
    out_of_time: bool,
) -> Result<BatchSum> {
    let mut totals = [loss, count as f64, f64::from(u8::from(out_of_time))];
    collective.all_reduce_sum_f64(&mut totals)?;
    let mut grads = model.grads();
    collective.all_reduce_sum(grads.as_mut_slice())?;
    grads.scale(1.0 / totals[1].max(1.0) as f32);
    model.set_grads(&grads)?;
    Ok(BatchSum {
        loss: totals[0],
        count: totals[1] as usize,
        out_of_time: totals[2] > 0.0,
    })
}

/// Averages the model's buffers (batch-norm running statistics, updated by each rank on
/// its share) over the ranks, so that every rank keeps the same model.
pub(super) fn average_buffers(
    model: &mut (impl Parameters + ?Sized),
    collective: &dyn Collective,
) -> Result<()> {
    let mut flat = Vec::new();
    model.visit_buffers(&mut Visitor::new(&mut |_, b| {
        flat.extend_from_slice(&b.value)
    }));
    if flat.is_empty() {
        return Ok(());
    }
    collective.all_reduce_sum(&mut flat)?;
    let ranks = collective.size() as f32;
    let mut rest = &flat[..];
    model.visit_buffers_mut(&mut Visitor::new(&mut |_, b| {
        let (mine, others) = rest.split_at(b.value.len());
        b.value
            .iter_mut()
            .zip(mine)
            .for_each(|(v, &sum)| *v = sum / ranks);
        rest = others;
    }));
    Ok(())
}
