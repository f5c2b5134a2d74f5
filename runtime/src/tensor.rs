//! A plain host tensor: a shape and row-major f32 data.
//!
//! This is deliberately minimal. The CPU reference runtime computes in f32
//! (it is the numerical oracle for the other backends), and weights are stored
//! as f32 whatever their file dtype, so one element type is enough. Anything
//! cleverer (strides, views, other dtypes) belongs to a backend, not here.

/// A dense row-major f32 tensor. A scalar has shape `[]` and one element.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl Tensor {
    /// A tensor over `data`, which must hold exactly `shape.iter().product()` elements.
    ///
    /// # Panics
    /// When the length does not match the shape: that is a bug in the caller,
    /// never a property of user input (loaders check sizes before building tensors).
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Tensor {
        let numel = numel_of(&shape);
        assert_eq!(
            data.len(),
            numel,
            "tensor of shape {shape:?} needs {numel} elements, got {}",
            data.len()
        );
        Tensor { shape, data }
    }

    /// A tensor of zeros.
    pub fn zeros(shape: Vec<usize>) -> Tensor {
        let numel = numel_of(&shape);
        Tensor {
            shape,
            data: vec![0.0; numel],
        }
    }

    /// The number of elements.
    pub fn numel(&self) -> usize {
        self.data.len()
    }

    /// Row `i` of a 2-D tensor (`[rows, cols]`), e.g. one embedding vector.
    ///
    /// # Panics
    /// When the tensor is not 2-D or `i` is out of range.
    pub fn row(&self, i: usize) -> &[f32] {
        assert_eq!(
            self.shape.len(),
            2,
            "row() needs a 2-D tensor, shape is {:?}",
            self.shape
        );
        let (rows, cols) = (self.shape[0], self.shape[1]);
        assert!(i < rows, "row {i} out of range for shape {:?}", self.shape);
        &self.data[i * cols..(i + 1) * cols]
    }
}

/// Elements of a shape (1 for a scalar).
fn numel_of(shape: &[usize]) -> usize {
    shape.iter().product()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basics() {
        let t = Tensor::new(vec![2, 3], vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(t.numel(), 6);
        assert_eq!(t.row(1), &[3.0, 4.0, 5.0]);
        let z = Tensor::zeros(vec![4]);
        assert_eq!(z.data, vec![0.0; 4]);
        assert_eq!(Tensor::zeros(vec![]).numel(), 1);
    }

    #[test]
    #[should_panic(expected = "needs 6 elements")]
    fn new_checks_length() {
        Tensor::new(vec![2, 3], vec![0.0; 5]);
    }
}
