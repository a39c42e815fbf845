//! Help for services that publish from an outbox table: rows written in the
//! transaction that made them, published from there in batches, then
//! marked.

/// Outbox rows grouped by sensor: (sensor, the rows' `seq`s, the decoded
/// messages), sensors and rows in the order the rows came.
pub type SensorRows<M> = Vec<(String, Vec<i64>, Vec<M>)>;

/// Decodes outbox rows `(seq, sensor_id, body)` as `M` and groups them by
/// sensor, one batch per sensor; a body that does not decode is an error.
pub fn by_sensor<M: prost::Message + Default>(
    rows: Vec<(i64, String, Vec<u8>)>,
) -> Result<SensorRows<M>, prost::DecodeError> {
    let mut out: SensorRows<M> = Vec::new();
    for (seq, sensor, body) in rows {
        let m = M::decode(body.as_slice())?;
        match out.iter_mut().find(|(s, _, _)| *s == sensor) {
            Some((_, seqs, ms)) => {
                seqs.push(seq);
                ms.push(m);
            }
            None => out.push((sensor, vec![seq], vec![m])),
        }
    }
    Ok(out)
}
