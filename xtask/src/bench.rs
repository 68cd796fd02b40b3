pub fn run(_r: u32, _n: u32) -> anyhow::Result<()> {
    anyhow::bail!("bench: not written yet")
}
