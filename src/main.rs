fn main() {
    println!("grok1-quant");
}
